//! Example worker: evaluates the arithmetic expressions in its task text
//! (`+ - * / ^`, parentheses, decimals), one per comma-separated item.

use bgagents_guest::{Agent, Request, print};

struct Calculator;

impl Agent for Calculator {
    fn run(request: Request) -> Result<String, String> {
        let mut answers = Vec::new();
        for expression in request
            .task
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let value = evaluate(expression)
                .map_err(|error| format!("cannot evaluate `{expression}`: {error}"))?;
            print(&format!("{expression} = {}\n", show(value)));
            answers.push(format!("{expression} = {}", show(value)));
        }
        if answers.is_empty() {
            return Err("the task has no expression to evaluate, e.g. `(17 + 25) * 3`".into());
        }
        Ok(answers.join("\n"))
    }
}

fn show(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn evaluate(text: &str) -> Result<f64, String> {
    let mut parser = Parser {
        chars: text.chars().filter(|c| !c.is_whitespace()).collect(),
        at: 0,
    };
    let value = parser.sum()?;
    match parser.peek() {
        None => Ok(value),
        Some(c) => Err(format!("unexpected `{c}`")),
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.power()?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.at += 1;
            let rhs = self.power()?;
            if op == '/' && rhs == 0.0 {
                return Err("division by zero".into());
            }
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if self.peek() == Some('^') {
            self.at += 1;
            return Ok(base.powf(self.power()?));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.peek() == Some('-') {
            self.at += 1;
            return Ok(-self.unary()?);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let value = self.sum()?;
                if self.peek() != Some(')') {
                    return Err("missing `)`".into());
                }
                self.at += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.at += 1;
                }
                let number: String = self.chars[start..self.at].iter().collect();
                number
                    .parse()
                    .map_err(|_| format!("`{number}` is not a number"))
            }
            Some(c) => Err(format!("unexpected `{c}`")),
            None => Err("the expression ends too early".into()),
        }
    }
}

bgagents_guest::export_agent!(Calculator);
