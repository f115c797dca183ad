//! `todo`: a task list the model keeps (create_todo, create_todos,
//! update_todos, list_todos), answered in docker-agent's JSON shapes. Each
//! task has its own list, or with `shared: true` the tasks of one session
//! (a `run`, an MCP client) share one.

use super::ToolSpec;
use super::args::Args;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub const CREATE: &str = "create_todo";
pub const CREATE_MANY: &str = "create_todos";
pub const UPDATE: &str = "update_todos";
pub const LIST: &str = "list_todos";

/// The statuses a todo may have.
const STATUSES: [&str; 3] = ["pending", "in-progress", "completed"];
/// Todos a list holds, and the longest description: a model cannot grow
/// the host's memory without bound.
const MAX_TODOS: usize = 1000;
const MAX_DESCRIPTION_BYTES: usize = 4096;

pub fn specs() -> Vec<ToolSpec> {
    let status = json!({"type": "string", "enum": STATUSES, "description": "pending, in-progress or completed."});
    vec![
        ToolSpec {
            name: CREATE.into(),
            description: "Add one item to the todo list (status pending).".into(),
            parameters: json!({
                "type": "object",
                "properties": {"description": {"type": "string", "description": "What is to be done."}},
                "required": ["description"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: CREATE_MANY.into(),
            description: "Add several items to the todo list at once (status pending).".into(),
            parameters: json!({
                "type": "object",
                "properties": {"descriptions": {"type": "array", "items": {"type": "string"}, "description": "What is to be done, one item each."}},
                "required": ["descriptions"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: UPDATE.into(),
            description: "Set the status of one or more todo items by id.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "updates": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string", "description": "The item's id (todo_N)."},
                                "status": status
                            },
                            "required": ["id", "status"],
                            "additionalProperties": false
                        },
                        "description": "The changes to make."
                    }
                },
                "required": ["updates"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: LIST.into(),
            description: "Show every todo item with its status.".into(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            read_only: true,
        },
    ]
}

#[derive(Debug, Clone, Serialize)]
struct Todo {
    id: String,
    description: String,
    status: String,
}

/// A todo list; clones share it.
#[derive(Debug, Clone, Default)]
pub struct TodoList(Arc<Mutex<Items>>);

#[derive(Debug, Default)]
struct Items {
    todos: Vec<Todo>,
    next_id: u64,
}

impl TodoList {
    /// Runs the todo tool `name`; `None` when it is not one.
    pub fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let mut items = self.0.lock().unwrap();
        let answer = match name {
            CREATE => args.only(&["description"]).and_then(|()| {
                let description = args.string("description")?.unwrap_or_default();
                let created = items.add(vec![description])?;
                Ok(json!({"created": created[0], "all_todos": items.todos, "reminder": items.reminder()}))
            }),
            CREATE_MANY => args.only(&["descriptions"]).and_then(|()| {
                let descriptions = args.strings("descriptions", "description")?;
                let created = items.add(descriptions)?;
                Ok(json!({"created": created, "all_todos": items.todos, "reminder": items.reminder()}))
            }),
            UPDATE => args.only(&["updates"]).and_then(|()| items.update(args.raw("updates"))),
            LIST => args
                .only(&[])
                .map(|()| json!({"todos": items.todos, "reminder": items.reminder()})),
            _ => return None,
        };
        Some(answer.map(|mut value| {
            // An absent reminder is left out, as docker-agent leaves it.
            if let Some(map) = value.as_object_mut()
                && map.get("reminder").is_some_and(Value::is_null)
            {
                map.remove("reminder");
            }
            value.to_string()
        }))
    }
}

impl Items {
    fn add(&mut self, descriptions: Vec<String>) -> Result<Vec<Todo>, String> {
        if self.todos.len() + descriptions.len() > MAX_TODOS {
            // Finished items make room before anything is refused.
            self.todos.retain(|todo| todo.status != "completed");
        }
        if self.todos.len() + descriptions.len() > MAX_TODOS {
            return Err(format!(
                "the todo list holds at most {MAX_TODOS} unfinished items; complete some first"
            ));
        }
        if descriptions
            .iter()
            .any(|text| text.len() > MAX_DESCRIPTION_BYTES)
        {
            return Err(format!(
                "a todo description may be at most {MAX_DESCRIPTION_BYTES} bytes"
            ));
        }
        let created: Vec<Todo> = (descriptions.into_iter())
            .map(|description| {
                self.next_id += 1;
                Todo {
                    id: format!("todo_{}", self.next_id),
                    description,
                    status: "pending".into(),
                }
            })
            .collect();
        self.todos.extend(created.iter().cloned());
        Ok(created)
    }

    fn update(&mut self, updates: Option<&Value>) -> Result<Value, String> {
        let bad = || "updates must be an array of {\"id\", \"status\"} objects".to_string();
        let updates = updates.and_then(Value::as_array).ok_or_else(bad)?;
        // Every update is checked before any is made: all or nothing.
        let mut checked = Vec::new();
        for update in updates {
            let id = update.get("id").and_then(Value::as_str).ok_or_else(bad)?;
            let status = update
                .get("status")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            if !STATUSES.contains(&status) {
                return Err(format!(
                    "status {status:?} is not one of {}",
                    STATUSES.join(", ")
                ));
            }
            checked.push((id, status));
        }
        let (mut updated, mut not_found) = (Vec::new(), Vec::new());
        for (id, status) in checked {
            match self.todos.iter_mut().find(|todo| todo.id == id) {
                Some(todo) => {
                    todo.status = status.to_string();
                    updated.push(json!({"id": id, "status": status}));
                }
                None => not_found.push(id.to_string()),
            }
        }
        if updated.is_empty() && !not_found.is_empty() {
            return Err(json!({"not_found": not_found}).to_string());
        }
        let mut answer =
            json!({"updated": updated, "all_todos": self.todos, "reminder": self.reminder()});
        if !not_found.is_empty() {
            answer["not_found"] = json!(not_found);
        }
        Ok(answer)
    }

    /// The unfinished items, in-progress first; none when all are done.
    fn reminder(&self) -> Option<String> {
        let mut lines = String::new();
        for status in ["in-progress", "pending"] {
            for todo in self.todos.iter().filter(|todo| todo.status == status) {
                lines.push_str(&format!(" ({status}) [{}] {}", todo.id, todo.description));
            }
        }
        (!lines.is_empty()).then(|| format!("These todos are not completed yet:{lines}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(list: &TodoList, name: &str, args: Value) -> Result<Value, String> {
        let args = Args::parse(&args.to_string()).unwrap();
        let answer = list.call(name, &args).expect("a todo tool")?;
        Ok(serde_json::from_str(&answer).unwrap())
    }

    #[test]
    fn todos_are_created_updated_and_listed_with_a_reminder() {
        let list = TodoList::default();
        let created = call(&list, CREATE_MANY, json!({"descriptions": ["a", "b"]})).unwrap();
        assert_eq!(created["created"][1]["id"], "todo_2");
        assert_eq!(created["all_todos"].as_array().unwrap().len(), 2);
        let updates = json!({"updates": [{"id": "todo_1", "status": "completed"}, {"id": "todo_9", "status": "pending"}]});
        let updated = call(&list, UPDATE, updates).unwrap();
        assert_eq!(updated["not_found"], json!(["todo_9"]));
        assert_eq!(
            updated["reminder"],
            "These todos are not completed yet: (pending) [todo_2] b"
        );
        let bad = json!({"updates": [{"id": "todo_2", "status": "done"}]});
        let refused = call(&list, UPDATE, bad).unwrap_err();
        assert!(
            refused.contains("not one of pending, in-progress, completed"),
            "{refused}"
        );
        call(
            &list,
            UPDATE,
            json!({"updates": [{"id": "todo_2", "status": "completed"}]}),
        )
        .unwrap();
        let listed = call(&list, LIST, json!({})).unwrap();
        assert!(listed.get("reminder").is_none(), "{listed}");
        assert!(list.call("think", &Args::parse("{}").unwrap()).is_none());
    }

    #[test]
    fn a_list_holds_a_bounded_number_of_bounded_items() {
        let list = TodoList::default();
        let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        let refused = call(&list, CREATE, json!({"description": long})).unwrap_err();
        assert!(refused.contains("at most 4096 bytes"), "{refused}");
        let many: Vec<String> = (0..MAX_TODOS).map(|n| n.to_string()).collect();
        call(&list, CREATE_MANY, json!({"descriptions": many})).unwrap();
        let refused = call(&list, CREATE, json!({"description": "one more"})).unwrap_err();
        assert!(
            refused.contains("at most 1000 unfinished items"),
            "{refused}"
        );
        // Completed items make room.
        let done = json!({"updates": [{"id": "todo_1", "status": "completed"}]});
        call(&list, UPDATE, done).unwrap();
        call(&list, CREATE, json!({"description": "one more"})).unwrap();
    }
}
