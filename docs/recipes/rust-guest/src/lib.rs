//! Counts the words of a text, one sub-agent task per sentence. The same
//! component is coordinator and counter: with sub-agents to dispatch it
//! coordinates, without it counts.

use bgagents_guest::{Agent, Request, outcome, print, start, wait_all};

struct Summariser;

impl Agent for Summariser {
    fn run(request: Request) -> Result<String, String> {
        let Some(counter) = request.sub_agents.first() else {
            return Ok(request.task.split_whitespace().count().to_string());
        };
        let sentences: Vec<&str> = request
            .task
            .split('.')
            .map(str::trim)
            .filter(|sentence| !sentence.is_empty())
            .collect();
        if sentences.is_empty() {
            return Err("nothing to count".into()); // the task fails with this reason
        }
        print(&format!("counting {} sentence(s) in parallel\n", sentences.len()));
        // Start them all, then wait once: a task still running when its
        // parent returns is stopped.
        let ids = sentences
            .iter()
            .map(|sentence| start(counter, sentence))
            .collect::<Result<Vec<_>, _>>()?;
        let mut total = 0;
        for view in wait_all(&ids)? {
            total += outcome(&view)?.parse::<usize>().map_err(|e| e.to_string())?;
        }
        Ok(format!("{total} words in {} sentences", sentences.len()))
    }
}

bgagents_guest::export_agent!(Summariser);
