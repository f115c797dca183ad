//! The opening conversation, in docker-agent's order: the agent's own
//! system messages (its `instruction`, then today's date), then the
//! delegated task as a system message, then a user message that starts
//! the work.
//!
//! Every bgagents task is delegated (by a coordinating agent or a
//! front-end's caller through `run_background_agent`), so the task always
//! takes docker-agent's delegated-task shape.

use bgagents_guest::{Message, Request};

/// The user message that starts a delegated task (the task itself is in a
/// system message).
pub const PROCEED: &str = "Please proceed.";

/// The messages the first model turn sees.
pub fn opening_messages(request: &Request) -> Vec<Message> {
    let mut messages = Vec::new();
    if !request.instruction.is_empty() {
        messages.push(Message::system(request.instruction.clone()));
    }
    if let Some(date) = &request.date {
        messages.push(Message::system(format!("Today's date: {date}")));
    }
    messages.push(Message::system(task_prompt(
        &request.task,
        request.expected_output.as_deref(),
    )));
    messages.push(Message::user(PROCEED));
    messages
}

/// The system message carrying a delegated task and, when the caller gave
/// one, the output it expects.
pub fn task_prompt(task: &str, expected_output: Option<&str>) -> String {
    let mut prompt = format!(
        "You are a member of a team of agents. Your goal is to complete the following task:\
         \n\n<task>\n{task}\n</task>"
    );
    if let Some(expected) = expected_output.filter(|expected| !expected.is_empty()) {
        prompt.push_str(&format!(
            "\n\n<expected_output>\n{expected}\n</expected_output>"
        ));
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgagents_guest::Role;

    fn request() -> Request {
        Request {
            task_id: "agent_task_1".into(),
            agent: "writer".into(),
            instruction: String::new(),
            task: "Write a haiku".into(),
            expected_output: None,
            sub_agents: Vec::new(),
            description: "Writes poems".into(),
            date: None,
            max_iterations: 0,
        }
    }

    #[test]
    fn a_bare_task_is_the_task_prompt_then_proceed() {
        let messages = opening_messages(&request());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(
            messages[0].content,
            "You are a member of a team of agents. Your goal is to complete the following task:\
             \n\n<task>\nWrite a haiku\n</task>"
        );
        assert_eq!(messages[1].role, Role::User);
        assert_eq!(messages[1].content, "Please proceed.");
    }

    #[test]
    fn instruction_then_date_come_before_the_task() {
        let mut request = request();
        request.instruction = "You are a poet.".into();
        request.date = Some("2026-11-30".into());
        request.expected_output = Some("Three lines".into());
        let messages = opening_messages(&request);
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            [
                "You are a poet.",
                "Today's date: 2026-11-30",
                "You are a member of a team of agents. Your goal is to complete the following task:\
                 \n\n<task>\nWrite a haiku\n</task>\
                 \n\n<expected_output>\nThree lines\n</expected_output>",
                "Please proceed.",
            ]
        );
        assert!(messages[..3].iter().all(|m| m.role == Role::System));
    }

    #[test]
    fn an_empty_expected_output_is_left_out() {
        assert!(!task_prompt("t", Some("")).contains("expected_output"));
    }
}
