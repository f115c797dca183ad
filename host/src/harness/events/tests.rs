//! The parsers on streams of each CLI.

use super::*;

fn all(kind: HarnessKind, lines: &[&str]) -> Vec<Event> {
    let mut parser = Parser::new(kind);
    lines.iter().flat_map(|line| parser.line(line)).collect()
}

#[test]
fn claude_text_streamed_as_deltas_is_not_repeated_by_the_assistant_event() {
    let events = all(
        HarnessKind::ClaudeCode,
        &[
            r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"m1"}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"he"}}}"#,
            r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"llo"}}}"#,
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"hello"}]}}"#,
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"again"},{"type":"tool_use","id":"t1","name":"Read"}]}}"#,
            r#"{"type":"result","subtype":"success","result":"hello","num_turns":2,"usage":{"input_tokens":5,"output_tokens":7}}"#,
        ],
    );
    assert_eq!(
        events,
        [
            Event::Text("he".into()),
            Event::Text("llo".into()),
            Event::Text("again".into()),
            Event::Tool("Read".into()),
            Event::Usage {
                input: 5,
                output: 7,
                calls: 2
            },
            Event::End(Ok("hello".into())),
        ]
    );
}

#[test]
fn lines_that_are_not_json_objects_are_shown_and_others_skipped() {
    let events = all(
        HarnessKind::Codex,
        &["warning: something", "[1,2]", "", r#"{"type":"mystery"}"#],
    );
    assert_eq!(
        events,
        [
            Event::Raw("warning: something".into()),
            Event::Raw("[1,2]".into())
        ]
    );
}

#[test]
fn opencode_ends_at_a_step_that_does_not_call_tools() {
    let mut parser = Parser::new(HarnessKind::OpenCode);
    let tool_step = [
        r#"{"type":"step_start","part":{}}"#,
        r#"{"type":"text","part":{"text":"Looking."}}"#,
        r#"{"type":"step_finish","part":{"reason":"tool-calls","tokens":{"input":3,"output":1}}}"#,
    ];
    for line in tool_step {
        assert!(
            !parser
                .line(line)
                .iter()
                .any(|event| matches!(event, Event::End(_)))
        );
    }
    parser.line(r#"{"type":"step_start","part":{}}"#);
    parser.line(r#"{"type":"text","part":{"text":"Done."}}"#);
    let end = parser.line(r#"{"type":"step_finish","part":{"reason":"stop"}}"#);
    assert_eq!(end.last(), Some(&Event::End(Ok("Done.".into()))));
}

#[test]
fn claude_counts_each_messages_tokens_once_as_it_arrives_and_the_result_reconciles() {
    let usage = r#""usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":20}"#;
    let events = all(
        HarnessKind::ClaudeCode,
        &[
            &format!(
                r#"{{"type":"assistant","message":{{"id":"m1",{usage},"content":[{{"type":"text","text":"a"}}]}}}}"#
            ),
            // The same message's next block repeats its usage.
            &format!(
                r#"{{"type":"assistant","message":{{"id":"m1",{usage},"content":[{{"type":"tool_use","id":"t1","name":"Read"}}]}}}}"#
            ),
            r#"{"type":"assistant","message":{"id":"m2","usage":{"input_tokens":40,"output_tokens":2},"content":[]}}"#,
            r#"{"type":"result","subtype":"success","result":"a","num_turns":2,"usage":{"input_tokens":60,"output_tokens":30}}"#,
        ],
    );
    let usage: Vec<&Event> = (events.iter())
        .filter(|event| matches!(event, Event::Usage { .. }))
        .collect();
    assert_eq!(
        usage,
        [
            &Event::Usage {
                input: 15,
                output: 20,
                calls: 1
            },
            &Event::Usage {
                input: 40,
                output: 2,
                calls: 1
            },
            &Event::Usage {
                input: 5,
                output: 8,
                calls: 0
            },
        ]
    );
}

#[test]
fn remembered_ids_and_opencodes_answer_are_bounded() {
    let mut parser = Parser::with_text_cap(HarnessKind::OpenCode, 10);
    parser.line(r#"{"type":"text","part":{"text":"0123456789abcdef"}}"#);
    parser.line(r#"{"type":"text","part":{"text":"more"}}"#);
    let end = parser.line(r#"{"type":"step_finish","part":{"reason":"stop"}}"#);
    assert_eq!(end.last(), Some(&Event::End(Ok("0123456789".into()))));

    let mut parser = Parser::new(HarnessKind::Codex);
    for n in 0..3 * REMEMBERED {
        parser.line(&format!(
            r#"{{"type":"item.started","item":{{"id":"i{n}","type":"command_execution"}}}}"#
        ));
    }
    let Parser::Codex(codex) = &parser else {
        unreachable!()
    };
    assert_eq!(codex.tools.values.len(), REMEMBERED);
    assert_eq!(codex.tools.order.len(), REMEMBERED);
}
