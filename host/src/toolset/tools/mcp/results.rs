//! What a server's answers become for the model: its tools as
//! [`ToolSpec`]s (after the toolset's `tools:` filter) and a tool call's
//! result as text.

use super::super::ToolSpec;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents, Tool};
use serde_json::{Map, Value, json};

/// Bytes of a tool result kept; the rest is cut and the result says so.
pub(super) const MAX_RESULT: usize = 1 << 20;

/// The tools `filter` (a toolset's `tools:`) takes from `tools`, in the
/// server's order; every tool when there is no filter (or an empty one, as
/// in docker-agent). A filter naming a tool the server does not have is an
/// error listing the ones it has, so a misspelt name is not silently a
/// missing tool.
pub(super) fn filtered<'a>(
    tools: &'a [Tool],
    filter: Option<&[String]>,
) -> Result<Vec<&'a Tool>, String> {
    let Some(wanted) = filter.filter(|wanted| !wanted.is_empty()) else {
        return Ok(tools.iter().collect());
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|name| !tools.iter().any(|tool| tool.name == name.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let has: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
        let has = match has.is_empty() {
            true => "it has no tools".to_string(),
            false => format!("it has {}", has.join(", ")),
        };
        return Err(format!(
            "`tools:` names {} that the server does not have ({has}); fix the toolset's \
             `tools:` list",
            missing
                .iter()
                .map(|name| format!("{name:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(tools
        .iter()
        .filter(|tool| wanted.iter().any(|name| tool.name == name.as_str()))
        .collect())
}

/// A server's tool as the agent sees it.
pub(super) fn spec(tool: &Tool) -> ToolSpec {
    let description = match (&tool.description, &tool.title) {
        (Some(description), _) => description.to_string(),
        (None, Some(title)) => title.clone(),
        (None, None) => String::new(),
    };
    ToolSpec {
        name: tool.name.to_string(),
        description,
        parameters: object_schema(&tool.input_schema),
        read_only: (tool.annotations.as_ref())
            .is_some_and(|hint| hint.read_only_hint == Some(true)),
    }
}

/// The server's input schema as an object schema the model APIs accept:
/// `type: object` with `properties` (a server that sends neither, or
/// something else entirely, gets an empty object schema).
fn object_schema(schema: &Map<String, Value>) -> Value {
    match schema.get("type") {
        Some(Value::String(kind)) if kind == "object" => {}
        None if schema.contains_key("properties") => {}
        _ => return json!({"type": "object", "properties": {}}),
    }
    let mut schema = schema.clone();
    schema.insert("type".to_string(), json!("object"));
    if !matches!(schema.get("properties"), Some(Value::Object(_))) {
        schema.insert("properties".to_string(), json!({}));
    }
    Value::Object(schema)
}

/// A call's result as text: its text content joined, other content
/// described in a line, the structured result when there is no content;
/// cut at [`MAX_RESULT`]. `Err` when the server flagged it an error.
pub(super) fn result_text(result: &CallToolResult) -> Result<String, String> {
    let mut parts: Vec<String> = result.content.iter().map(describe).collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = cut(parts.join("\n"));
    match result.is_error {
        Some(true) if text.is_empty() => Err("the tool failed and gave no reason".to_string()),
        Some(true) => Err(text),
        _ => Ok(text),
    }
}

fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!(
            "[image: {}, {} bytes of base64, not shown]",
            image.mime_type,
            image.data.len()
        ),
        ContentBlock::Audio(audio) => format!(
            "[audio: {}, {} bytes of base64, not shown]",
            audio.mime_type,
            audio.data.len()
        ),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}: {}, {} bytes of base64, not shown]",
                mime_type.as_deref().unwrap_or("binary"),
                blob.len()
            ),
            #[allow(unreachable_patterns)]
            _ => "[resource, not shown]".to_string(),
        },
        ContentBlock::ResourceLink(link) => {
            format!("[resource link: {} ({})]", link.uri, link.name)
        }
        #[allow(unreachable_patterns)]
        _ => "[content of a kind not shown]".to_string(),
    }
}

/// `text` cut to [`MAX_RESULT`] bytes at a character boundary, with a note.
pub(super) fn cut(text: String) -> String {
    crate::text::cut_with_note(text, MAX_RESULT, |total| {
        format!(
            "\n[cut: the result was {total} bytes; only the first {} KiB are shown]",
            MAX_RESULT >> 10
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock};
    use std::sync::Arc;

    fn tool(name: &str, schema: Value) -> Tool {
        let Value::Object(schema) = schema else {
            panic!("a schema is an object")
        };
        Tool::new(name.to_string(), "does things", Arc::new(schema))
    }

    #[test]
    fn no_filter_or_an_empty_one_takes_every_tool_in_order() {
        let tools = [tool("b", json!({})), tool("a", json!({}))];
        let names = |filter: Option<&[String]>| -> Vec<String> {
            let kept = filtered(&tools, filter).unwrap();
            kept.iter().map(|tool| tool.name.to_string()).collect()
        };
        assert_eq!(names(None), ["b", "a"]);
        assert_eq!(names(Some(&[])), ["b", "a"]);
        assert_eq!(names(Some(&["a".to_string()])), ["a"]);
    }

    #[test]
    fn a_filter_naming_a_missing_tool_lists_what_the_server_has() {
        let tools = [tool("search", json!({})), tool("read", json!({}))];
        let error = filtered(&tools, Some(&["serch".to_string()])).unwrap_err();
        assert!(
            error.contains(
                "`tools:` names \"serch\" that the server does not have (it has search, read)"
            ),
            "{error}"
        );
    }

    #[test]
    fn odd_schemas_become_object_schemas() {
        let spec_of = |schema| spec(&tool("t", schema)).parameters;
        assert_eq!(
            spec_of(json!({})),
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            spec_of(json!({"type": "string"})),
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            spec_of(json!({"properties": {"q": {"type": "string"}}})),
            json!({"type": "object", "properties": {"q": {"type": "string"}}})
        );
        let kept = json!({"type": "object", "properties": {"q": {}}, "required": ["q"]});
        assert_eq!(spec_of(kept.clone()), kept);
    }

    #[test]
    fn results_join_text_describe_the_rest_and_errors_are_errors() {
        let result = CallToolResult::success(vec![
            ContentBlock::text("one"),
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::text("two"),
        ]);
        assert_eq!(
            result_text(&result).unwrap(),
            "one\n[image: image/png, 8 bytes of base64, not shown]\ntwo"
        );
        let failed = CallToolResult::error(vec![ContentBlock::text("no such file")]);
        assert_eq!(result_text(&failed).unwrap_err(), "no such file");
    }

    #[test]
    fn long_results_are_cut_at_a_character_boundary_with_a_note() {
        // One byte, then two-byte characters: the limit falls inside one.
        let text = format!("a{}", "é".repeat(MAX_RESULT / 2));
        let cut = cut(text);
        assert_eq!(
            cut,
            format!(
                "a{}\n[cut: the result was {} bytes; only the first 1024 KiB are shown]",
                "é".repeat(MAX_RESULT / 2 - 1),
                MAX_RESULT + 1
            )
        );
        let short = "é".repeat(10);
        assert_eq!(super::cut(short.clone()), short);
    }
}
