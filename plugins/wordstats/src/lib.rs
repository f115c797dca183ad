//! Example worker: word statistics of its task text — words, distinct words,
//! sentences, the longest word and the most frequent words.

use bgagents_guest::{Agent, Request, print};
use std::collections::BTreeMap;

struct WordStats;

impl Agent for WordStats {
    fn run(request: Request) -> Result<String, String> {
        let words: Vec<String> = request
            .task
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|word| !word.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return Err("the task has no words to count".into());
        }
        print(&format!("counting {} words\n", words.len()));
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for word in &words {
            *counts.entry(word).or_default() += 1;
        }
        let mut frequent: Vec<(&str, usize)> = counts.iter().map(|(w, n)| (*w, *n)).collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = frequent
            .iter()
            .take(3)
            .map(|(word, count)| format!("{word} ×{count}"))
            .collect();
        let longest = words
            .iter()
            .max_by_key(|word| word.chars().count())
            .unwrap();
        let sentences = request
            .task
            .split(['.', '!', '?'])
            .filter(|sentence| !sentence.trim().is_empty())
            .count();
        Ok(format!(
            "{} words, {} distinct, {} sentence(s); longest: {longest}; most frequent: {}",
            words.len(),
            counts.len(),
            sentences,
            top.join(", ")
        ))
    }
}

bgagents_guest::export_agent!(WordStats);
