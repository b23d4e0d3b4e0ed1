//! Chat runs in-process: the agent loop against scripted provider streams
//! in the exact Anthropic / OpenAI wire formats, persistence, encodings,
//! resume, limits and bad input.

use std::rc::Rc;

use everjust_core::ports::{Clock, Sql};
use serde_json::{json, Value};

use crate::helpers::{Res, ScriptedHttp, TestApp};

const ANTHROPIC: &[(&str, &str)] = &[
    ("ANTHROPIC_API_KEY", "sk-test"),
    ("ANTHROPIC_BASE_URL", "http://model.test"),
    ("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
];

const OPENAI: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-o"),
    ("OPENAI_BASE_URL", "http://oai.test"),
    ("OPENAI_MODEL", "gpt-4o"),
];

/// One chunk of an OpenAI-compatible stream.
fn chunk(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn ev(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic stream: text pieces, then optional tool calls (input sent in
/// 5-byte fragments), then the stop reason.
fn anthropic(texts: &[&str], tools: &[(&str, &str, Value)], stop: &str) -> String {
    let mut s = ev(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":100,"output_tokens":1,"cache_read_input_tokens":40}}}),
    );
    s += &ev("ping", json!({"type":"ping"}));
    let mut index = 0;
    if !texts.is_empty() {
        s += &ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        );
        for t in texts {
            s += &ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
            );
        }
        s += &ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        );
        index = 1;
    }
    for (id, name, input) in tools {
        s += &ev(
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":id,"name":name,"input":{}}}),
        );
        let text = input.to_string();
        let chars: Vec<char> = text.chars().collect();
        for part in chars.chunks(5) {
            let part: String = part.iter().collect();
            s += &ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":part}}),
            );
        }
        s += &ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        );
        index += 1;
    }
    s += &ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},"usage":{"output_tokens":50}}),
    );
    s += &ev("message_stop", json!({"type":"message_stop"}));
    s
}

async fn setup(vars: &[(&str, &str)]) -> (TestApp, Rc<ScriptedHttp>, String, String) {
    let http = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(vars, http.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "site").await;
    let s = app
        .json(
            "POST",
            &format!("/v1/projects/{p}/sessions"),
            Some(&t),
            json!({"title": "first"}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json());
    (
        app,
        http,
        t,
        s.json()["id"].as_str().expect("id").to_owned(),
    )
}

/// A session whose runs give the model about 1,000 tokens of conversation.
async fn setup_small_context() -> (TestApp, Rc<ScriptedHttp>, String, String) {
    let vars: Vec<(&str, &str)> = ANTHROPIC
        .iter()
        .copied()
        .chain([("AGENT_CONTEXT_TOKENS", "1000")])
        .collect();
    setup(&vars).await
}

/// A message sent without streaming whose run completed.
fn assert_completed(r: &Res) {
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (202, Some("complete")),
        "{}",
        r.json()
    );
}

/// The text blocks of a model request's messages, in order.
fn texts_sent(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .collect()
}

/// A long session does not outgrow the model's context window: a run gives
/// the model the newest messages that fit AGENT_CONTEXT_TOKENS, from a
/// user's message on, and says that older ones are left out; a session that
/// fits is sent whole.
#[tokio::test]
async fn a_long_sessions_oldest_messages_are_left_out_of_the_models_context() {
    let (app, http, t, s) = setup_small_context().await;
    let path = format!("/v1/sessions/{s}/messages");
    // About 900 bytes a turn: the budget (1000 tokens, 3 bytes each) holds
    // three turns.
    let text = |i: usize| format!("turn-{i} {}", "x".repeat(880));
    let sent_texts = |i: usize| {
        let body = http.requests.borrow()[i].1.clone();
        assert_eq!(
            body["messages"][0]["role"], "user",
            "a conversation starts with the user"
        );
        texts_sent(&body)
    };
    for i in 0..6 {
        http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
        let r = app
            .json("POST", &path, Some(&t), json!({"content": text(i)}))
            .await;
        assert_completed(&r);
        let texts = sent_texts(i);
        let left_out = texts[0].starts_with("[The ");
        assert!(
            texts.iter().any(|t| t.starts_with(&format!("turn-{i} "))),
            "run {i}: the new message is sent"
        );
        assert!(
            i == 0
                || texts
                    .iter()
                    .any(|t| t.starts_with(&format!("turn-{} ", i - 1))),
            "run {i}: the turn before it fits and is sent: {texts:?}"
        );
        if i < 3 {
            assert!(
                !left_out,
                "run {i}: the session fits and is sent whole: {texts:?}"
            );
            assert_eq!(
                texts.iter().filter(|t| t.starts_with("turn-")).count(),
                i + 1
            );
        } else {
            assert!(
                left_out,
                "run {i}: the note on what is left out comes first"
            );
            assert!(
                !texts.iter().any(|t| t.starts_with("turn-0 ")),
                "run {i}: the oldest turn is left out"
            );
            let sent: usize = texts.iter().map(String::len).sum();
            assert!(sent <= 3_000 + 500, "run {i}: {sent} bytes of text sent");
        }
    }
    // Nothing is lost: every message stays stored; and the older ones are
    // not even read on the way to the model.
    assert_eq!(messages(&app, &t, &s).await.len(), 12);
    let read = history_read(&app, &s).await;
    assert!(read.len() < 12, "{} of 12 messages read", read.len());
    assert_eq!(read.last().map(|m| m.role.as_str()), Some("assistant"));
    assert!(read.iter().any(|m| m.role == "user"));
}

/// What a run of a session with a 1,000-token budget reads of its history.
async fn history_read(app: &TestApp, session: &str) -> Vec<everjust_core::db::chat::StoredMessage> {
    everjust_core::db::chat::recent_messages(
        app.ports.sql.as_ref(),
        session,
        None,
        everjust_core::chat::agent::context_bytes(1000),
    )
    .await
    .expect("read")
}

/// The history a run reads starts at the last user's message even when
/// what came after it is bigger than the whole budget (as for a run driven
/// again mid-way).
#[tokio::test]
async fn the_history_read_keeps_the_last_users_message_whatever_follows_it() {
    let (app, http, t, s) = setup_small_context().await;
    // Text Postgres cannot compress below the budget (about 3 KB).
    let noise: String = (0u64..3_000)
        .map(|i| format!("{:x}", i.wrapping_mul(2_654_435_761) % 1_000_003))
        .collect();
    http.push(200, &[], anthropic(&[noise.as_str()], &[], "end_turn"));
    assert_completed(&app.send_message(&t, &s, "hello").await);
    let read = history_read(&app, &s).await;
    let roles: Vec<&str> = read.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant"]);
}

/// A run's own tool rounds count too: once what a call would send outgrows
/// AGENT_CONTEXT_TOKENS, the session's earlier messages are left out of the
/// run's next calls (its own stay, behind a note), rather than the provider
/// refusing the call.
#[tokio::test]
async fn a_runs_growth_leaves_the_sessions_earlier_messages_out_of_its_next_calls() {
    let (app, http, t, s) = setup_small_context().await;
    let path = format!("/v1/sessions/{s}/messages");
    // An earlier turn that fits the budget on its own.
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let early = format!("earlier {}", "e".repeat(1_200));
    let r = app
        .json("POST", &path, Some(&t), json!({"content": early}))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    // This run writes a file larger than what is left of the budget, then answers.
    let page = "p".repeat(2_500);
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[(
                "t1",
                "write_file",
                json!({"path": "big.html", "content": page}),
            )],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["done"], &[], "end_turn"));
    let r = app
        .json(
            "POST",
            &path,
            Some(&t),
            json!({"content": "now write the page"}),
        )
        .await;
    assert_completed(&r);
    let requests = http.requests.borrow().clone();
    assert_eq!(requests.len(), 3);
    let texts = |i: usize| texts_sent(&requests[i].1);
    // The run's first call had the earlier turn (it fit) ...
    assert!(texts(1).iter().any(|t| t.starts_with("earlier ")));
    // ... its second leaves it out, keeps the run's own turn and its tool round.
    let second = &requests[2].1["messages"];
    let second_texts = texts(2);
    assert!(!second_texts.iter().any(|t| t.starts_with("earlier ")));
    assert!(
        second_texts[0].starts_with("[The session's "),
        "{second_texts:?}"
    );
    assert!(second_texts.iter().any(|t| t == "now write the page"));
    assert_eq!(second[0]["role"], "user");
    assert_eq!(second[1]["content"][0]["type"], "tool_use");
    assert_eq!(second[2]["content"][0]["type"], "tool_result");
}

/// A run whose own tool rounds outgrow AGENT_CONTEXT_TOKENS (a file written,
/// then read back) is not refused by the provider: its next call has the
/// older round's bulk cleared with a note, oldest first, and the newest
/// results whole; the stored answer keeps everything.
#[tokio::test]
async fn a_run_that_outgrows_the_context_sends_its_older_tool_rounds_cleared() {
    let (app, http, t, s) = setup_small_context().await;
    let page = format!("<p>{}</p>", "q".repeat(2_200));
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[(
                "w1",
                "write_file",
                json!({"path": "big.html", "content": page}),
            )],
            "tool_use",
        ),
    );
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[("r1", "read_file", json!({"path": "big.html"}))],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["done"], &[], "end_turn"));
    let r = app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/messages"),
            Some(&t),
            json!({"content": "write the page, then check it"}),
        )
        .await;
    assert_completed(&r);
    let requests = http.requests.borrow().clone();
    assert_eq!(requests.len(), 3);
    // The second call still fits: the write goes whole.
    assert_eq!(
        requests[1].1["messages"][1]["content"][0]["input"]["content"],
        page
    );
    // The third would not: the write's file content is cleared, the read's
    // result (the newest) is sent whole.
    let third = &requests[2].1["messages"];
    assert_eq!(
        third[0]["content"][0]["text"],
        "write the page, then check it"
    );
    let written = third[1]["content"][0]["input"]["content"]
        .as_str()
        .expect("write_file content");
    assert!(
        written.starts_with('[') && written.contains("cleared to fit the context window"),
        "{written}"
    );
    assert_eq!(third[1]["content"][0]["input"]["path"], "big.html");
    let read_back = third[4]["content"][0]["content"]
        .as_str()
        .expect("read_file result");
    assert!(read_back.contains(&page), "{read_back:.200}");
    assert!(
        requests[2].1["messages"].to_string().len() <= 3 * 1000,
        "the third call is still over the budget"
    );
    // The stored answer has the write's content as the model sent it.
    let stored = app
        .ports
        .sql
        .query(
            "SELECT content::text AS c FROM messages WHERE role = 'assistant'",
            &[],
        )
        .await
        .expect("messages");
    assert!(stored[0].text("c").expect("content").contains(&page));
}

/// Sends a message with Accept: text/event-stream; returns the response.
async fn send(app: &TestApp, t: &str, session: &str, text: &str, protocol: &str) -> Res {
    let req = http::Request::post(format!(
        "/v1/sessions/{session}/messages?protocol={protocol}"
    ))
    .header("authorization", format!("Bearer {t}"))
    .header("content-type", "application/json")
    .header("accept", "text/event-stream")
    .body(bytes::Bytes::from(json!({"content": text}).to_string()))
    .expect("req");
    let res = everjust_core::handle(&app.ports, req, everjust_core::Meta::default()).await;
    let (parts, body) = res.into_parts();
    let body = match body {
        everjust_core::Body::Stream(s) => {
            use futures_util::StreamExt;
            bytes::Bytes::from(s.collect::<Vec<_>>().await.concat())
        }
        everjust_core::Body::Full(b) => b,
        everjust_core::Body::Native(_) => panic!("native"),
    };
    Res {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// (id, data) of every SSE event.
fn sse(body: &[u8]) -> Vec<(Option<i64>, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse().ok());
            let data = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n");
            (id, data)
        })
        .collect()
}

fn native(body: &[u8]) -> Vec<Value> {
    sse(body)
        .into_iter()
        .map(|(_, d)| serde_json::from_str(&d).expect("json event"))
        .collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "text_delta")
        .filter_map(|e| e["delta"].as_str())
        .collect()
}

async fn messages(app: &TestApp, t: &str, session: &str) -> Vec<Value> {
    app.get(&format!("/v1/sessions/{session}/messages"), Some(t))
        .await
        .json()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn tool_call_in_fragments_writes_the_file_and_everything_is_persisted() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let html = "<!doctype html><h1>Héllo 👋 \"quoted\"</h1>";
    http.push(
        200,
        &[("content-type", "text/event-stream")],
        anthropic(
            &["I'll write ", "the page."],
            &[(
                "toolu_1",
                "write_file",
                json!({"path": "index.html", "content": html}),
            )],
            "tool_use",
        ),
    );
    http.push(
        200,
        &[("content-type", "text/event-stream")],
        anthropic(&["Done: ", "index.html ✓"], &[], "end_turn"),
    );
    let r = send(&app, &t, &s, "Build a page", "native").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = native(&r.body);
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(
        seqs,
        (1..=i64::try_from(seqs.len()).expect("len")).collect::<Vec<_>>(),
        "gapless sequence"
    );
    assert_eq!(text_of(&events), "I'll write the page.Done: index.html ✓");
    assert!(events
        .iter()
        .any(|e| e["type"] == "tool_result" && e["is_error"] == false));
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    // The file is in the project, through the same path as the files API.
    let project = app.get("/v1/projects", Some(&t)).await.json()["items"][0]["id"]
        .as_str()
        .expect("p")
        .to_owned();
    let file = app
        .get(
            &format!("/v1/projects/{project}/files/index.html"),
            Some(&t),
        )
        .await;
    assert_eq!(std::str::from_utf8(&file.body).ok(), Some(html));
    // The model got the tool result back in the second call.
    let reqs = http.requests.borrow().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].0, "http://model.test/v1/messages");
    let last = &reqs[1].1["messages"]
        .as_array()
        .expect("messages")
        .last()
        .cloned()
        .expect("last");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], "toolu_1");
    // Persisted: the user message and one assistant message with usage and cost.
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["status"], "complete");
    assert_eq!(msgs[1]["usage"]["input_tokens"], 200);
    assert_eq!(msgs[1]["usage"]["output_tokens"], 100);
    assert_eq!(msgs[1]["usage"]["cache_read_tokens"], 80);
    assert!(msgs[1]["cost_micros"].as_i64().is_some_and(|c| c > 0));
    assert_eq!(app.count("usage_ledger").await, 2);
}

#[tokio::test]
async fn demo_provider_runs_the_whole_pipeline_without_a_key() {
    let (app, _http, t, s) = setup(&[]).await;
    let r = send(&app, &t, &s, "A todo app", "native").await;
    let events = native(&r.body);
    assert!(text_of(&events).contains("[demo model"), "clearly labelled");
    assert_eq!(events[0]["provider"], "demo");
    assert!(events
        .iter()
        .any(|e| e["type"] == "tool_call_end" && e["input"]["path"] == "index.html"));
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs[1]["status"], "complete");
}

/// A connection kept between messages (the Worker's session room) runs the
/// statements it was asked to prepare by name, with the same answers; a
/// statement whose result a migration changed since runs again unnamed.
#[tokio::test]
async fn a_kept_connection_runs_a_messages_statements_by_name_with_the_same_answers() {
    let (mut app, _http, t, s) = setup(&[]).await;
    let pg = app.on_naming_connection().await;
    assert_completed(&app.send_message(&t, &s, "A todo app").await);
    let ran = pg.take_unnamed();
    assert!(ran.len() >= 5, "the message ran {} statements", ran.len());
    pg.prepare(&ran).await;
    let named = |pg: Rc<everjust_core::ports::postgres::PgSql>| async move {
        pg.query_opt(
            "SELECT count(*)::int8 AS n FROM pg_prepared_statements WHERE NOT from_sql",
            &[],
        )
        .await
        .expect("count")
        .expect("row")
        .int("n")
        .expect("n")
    };
    assert_eq!(
        named(pg.clone()).await,
        i64::try_from(ran.len()).expect("count")
    );

    assert_completed(&app.send_message(&t, &s, "Make it blue").await);
    let unnamed = pg.take_unnamed();
    assert!(
        unnamed.iter().all(|shape| !ran.contains(shape)),
        "prepared, yet run unnamed: {unnamed:?}"
    );
    let msgs = messages(&app, &t, &s).await;
    let roles: Vec<_> = msgs.iter().map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        [
            Some("user"),
            Some("assistant"),
            Some("user"),
            Some("assistant")
        ]
    );
    assert!(msgs.iter().all(|m| m["status"] == "complete"), "{msgs:?}");
    assert_eq!(msgs[2]["content"][0]["text"], "Make it blue");

    // What a statement of the message returns changes under it.
    pg.batch("ALTER TABLE sessions ALTER COLUMN title TYPE varchar(200)")
        .await
        .expect("alter");
    assert_completed(&app.send_message(&t, &s, "And bigger").await);
    let again = pg.take_unnamed();
    assert!(
        again
            .iter()
            .any(|(sql, _)| sql.contains("FROM sessions WHERE id = $1 AND owner_id = $2")),
        "the session read was not run unnamed again: {again:?}"
    );
    assert_eq!(messages(&app, &t, &s).await.len(), 6);

    // A pooler between us that shares server connections loses named
    // statements: the first that is missing runs unnamed, and the
    // connection names none from then on.
    pg.prepare(&again).await;
    pg.batch("DEALLOCATE ALL").await.expect("deallocate");
    assert_eq!(messages(&app, &t, &s).await.len(), 6);
    assert!(!pg.names_statements());
    assert_completed(&app.send_message(&t, &s, "Now red").await);
    assert_eq!(messages(&app, &t, &s).await.len(), 8);
    pg.prepare(&ran).await;
    assert_eq!(named(pg.clone()).await, 0);
}

#[tokio::test]
async fn mid_stream_error_keeps_the_partial_answer_as_incomplete_and_the_session_usable() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let broken = anthropic(&["Partial ", "answer"], &[], "end_turn");
    let cut = broken
        .split("event: message_delta")
        .next()
        .expect("head")
        .to_owned()
        + &ev(
            "error",
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        );
    http.push(200, &[], cut);
    let r = send(&app, &t, &s, "hi", "native").await;
    let events = native(&r.body);
    assert!(events.iter().any(|e| e["type"] == "run_error"));
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("incomplete"))
    );
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs[1]["status"], "incomplete");
    assert_eq!(msgs[1]["content"][0]["text"], "Partial answer");
    assert_eq!(
        app.count("usage_ledger").await,
        1,
        "the broken call's usage is billed too"
    );
    // The session takes the next message.
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let again = send(&app, &t, &s, "again", "native").await;
    assert_eq!(
        native(&again.body).last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
}

#[tokio::test]
async fn connection_cut_mid_stream_is_incomplete() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let full = anthropic(&["Some ", "words ", "here"], &[], "end_turn");
    http.push(200, &[], full[..full.len() / 2].to_owned() + "!CUT");
    let r = send(&app, &t, &s, "hi", "native").await;
    assert_eq!(
        native(&r.body).last().map(|e| e["status"].clone()),
        Some(json!("incomplete"))
    );
    assert_eq!(messages(&app, &t, &s).await[1]["status"], "incomplete");
}

#[tokio::test]
async fn busy_provider_is_retried_after_retry_after() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        529,
        &[("retry-after", "2")],
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    http.push(200, &[], anthropic(&["fine"], &[], "end_turn"));
    let before = app.clock.now_ms();
    let r = send(&app, &t, &s, "hi", "native").await;
    assert_eq!(text_of(&native(&r.body)), "fine");
    assert!(app.clock.now_ms() - before >= 2000, "waited retry-after");
}

#[tokio::test]
async fn unreachable_provider_ends_the_run_with_an_error_and_the_session_usable() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    let r = send(&app, &t, &s, "hi", "native").await;
    let events = native(&r.body);
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("error"))
    );
    assert_eq!(app.count("runs WHERE status = 'running'").await, 0);
}

#[tokio::test]
async fn a_model_that_never_stops_calling_tools_is_stopped_at_max_steps() {
    let (app, http, t, s) = setup(&[ANTHROPIC[0], ANTHROPIC[1], ("AGENT_MAX_STEPS", "3")]).await;
    for i in 0..3 {
        http.push(
            200,
            &[],
            anthropic(
                &[],
                &[(&format!("toolu_{i}"), "list_files", json!({}))],
                "tool_use",
            ),
        );
    }
    let r = send(&app, &t, &s, "loop", "native").await;
    let last = native(&r.body).last().cloned().expect("event");
    assert_eq!(
        (last["status"].as_str(), last["stop_reason"].as_str()),
        (Some("incomplete"), Some("max_steps"))
    );
    assert_eq!(http.requests.borrow().len(), 3);
    assert_eq!(messages(&app, &t, &s).await[1]["status"], "incomplete");
}

#[tokio::test]
async fn bad_tool_input_is_a_tool_error_and_writes_nothing() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[
                (
                    "t1",
                    "write_file",
                    json!({"path": "../escape.txt", "content": "x"}),
                ),
                ("t2", "write_file", json!({"path": "a.txt"})),
                (
                    "t3",
                    "edit_file",
                    json!({"path": "nope.txt", "old": "a", "new": "b"}),
                ),
                ("t4", "run_command", json!({"command": "ls"})),
            ],
            "tool_use",
        ),
    );
    // A tool call whose input is not JSON at all.
    let mut broken = anthropic(
        &[],
        &[("t5", "write_file", json!({"path": "b.txt", "content": "y"}))],
        "tool_use",
    );
    broken = broken.replace(r#""partial_json":"{\"con""#, r#""partial_json":"{{{con""#);
    http.push(200, &[], broken);
    http.push(200, &[], anthropic(&["giving up"], &[], "end_turn"));
    let r = send(&app, &t, &s, "go", "native").await;
    let results: Vec<Value> = native(&r.body)
        .into_iter()
        .filter(|e| e["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|e| e["is_error"] == true), "{results:?}");
    assert!(results[3]["output"]
        .as_str()
        .is_some_and(|o| o.contains("No sandbox")));
    assert_eq!(app.count("files").await, 0);
}

#[tokio::test]
async fn edit_file_needs_exactly_one_match() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let project = app.get("/v1/projects", Some(&t)).await.json()["items"][0]["id"]
        .as_str()
        .expect("p")
        .to_owned();
    app.request(
        "PUT",
        &format!("/v1/projects/{project}/files/a.txt"),
        Some(&t),
        None,
        "one two two",
    )
    .await;
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[
                (
                    "e1",
                    "edit_file",
                    json!({"path": "a.txt", "old": "two", "new": "2"}),
                ),
                (
                    "e2",
                    "edit_file",
                    json!({"path": "a.txt", "old": "one", "new": "1"}),
                ),
            ],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let events = native(&send(&app, &t, &s, "edit", "native").await.body);
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "tool_result")
        .collect();
    assert_eq!(
        (
            results[0]["is_error"].as_bool(),
            results[1]["is_error"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(
        app.get(&format!("/v1/projects/{project}/files/a.txt"), Some(&t))
            .await
            .body,
        "1 two two"
    );
}

#[tokio::test]
async fn openai_compatible_provider_streams_and_calls_tools() {
    let (app, http, t, s) = setup(OPENAI).await;
    let mut first =
        chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Writing"}}]}));
    first += &chunk(
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"write_file","arguments":"{\"path\":\"x.txt\","}}]}}]}),
    );
    first += &chunk(
        json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"content\":\"hi\"}"}}]},"finish_reason":"tool_calls"}]}),
    );
    first += &chunk(json!({"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5}}));
    first += "data: [DONE]\n\n";
    http.push(200, &[], first);
    http.push(
        200,
        &[],
        chunk(json!({"choices":[{"index":0,"delta":{"content":"done"},"finish_reason":"stop"}]}))
            + "data: [DONE]\n\n",
    );
    let events = native(&send(&app, &t, &s, "go", "native").await.body);
    assert_eq!(text_of(&events), "Writingdone");
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    assert_eq!(
        http.requests.borrow()[0].0,
        "http://oai.test/v1/chat/completions"
    );
    assert_eq!(
        http.requests.borrow()[1].1["messages"]
            .as_array()
            .expect("m")
            .last()
            .expect("l")["role"],
        "tool"
    );
    assert_eq!(app.count("files").await, 1);
    // The second call's server sent no usage: it is billed an estimate of
    // what it was sent and what it streamed, and says so.
    let rows = ledger(&app).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], (10, 5, false), "the first call's reported usage");
    let (input, output, estimated) = rows[1];
    assert!(estimated);
    assert_eq!(output, 1, "\"done\" is about one token");
    assert!(
        input > 300,
        "its request held the system prompt, tools and the history: {input}"
    );
}

/// Each of the session's model calls as billed, oldest first: input and
/// output tokens and whether they are an estimate.
async fn ledger(app: &TestApp) -> Vec<(i64, i64, bool)> {
    app.ports
        .sql
        .query(
            "SELECT input_tokens, output_tokens, estimated FROM usage_ledger WHERE kind = 'model' ORDER BY created_at, id",
            &[],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| {
            (
                r.int("input_tokens").expect("input"),
                r.int("output_tokens").expect("output"),
                r.bool("estimated").expect("estimated"),
            )
        })
        .collect()
}

/// A call stopped (by a cancel, here) after its provider answered and
/// before its first block is billed what the provider reported: its input.
#[tokio::test]
async fn a_call_stopped_before_its_first_block_bills_the_reported_input() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    let full = anthropic(&["never sent"], &[], "end_turn");
    let head = &full[..full.find("event: content_block_start").expect("block")];
    http.push(200, &[], format!("{head}!HANG"));
    let sink = SpySink {
        cancel_at: Some(3),
        ..Default::default()
    };
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        everjust_core::chat::agent::run(&app.ports, &spec, &sink),
    )
    .await
    .expect("the run ends");
    assert_eq!(outcome.status, "cancelled");
    assert_eq!(outcome.usage.input_tokens, 100);
    assert_eq!(ledger(&app).await, vec![(100, 1, false)]);
}

/// A server that sends partial counts in its content chunks, cut short:
/// the reported input stands and the output is estimated from what it
/// streamed (its last partial count was not the whole call's).
#[tokio::test]
async fn partial_counts_of_a_cut_openai_stream_are_not_taken_as_final() {
    let (app, http, t, s) = setup(OPENAI).await;
    let words = "Streaming along with partial usage counts in every chunk. ";
    let mut body = String::new();
    for n in 1..=4 {
        body += &chunk(json!({
            "choices": [{"index": 0, "delta": {"content": words}}],
            "usage": {"prompt_tokens": 40, "completion_tokens": n},
        }));
    }
    // (The fake connection loses the last few bytes before its cut: a comment's.)
    http.push(200, &[], body + ": padding, lost in the cut\n\n!CUT");
    let events = native(&send(&app, &t, &s, "go", "native").await.body);
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("incomplete"))
    );
    let streamed = i64::try_from((4 * words.len()).div_ceil(4)).expect("tokens");
    assert_eq!(ledger(&app).await, vec![(40, streamed, true)]);
}

/// Providers report output tokens only at a stream's end: a stream cut
/// short is billed an estimate of what it streamed, never less than was
/// reported, and a complete one exactly what its provider reported.
#[tokio::test]
async fn a_stream_cut_short_bills_an_estimate_of_what_it_streamed() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let words = "A fairly long answer that the model streams before its connection breaks. ";
    let full = anthropic(&[words, words, words], &[], "end_turn");
    let cut = full
        .split("event: message_delta")
        .next()
        .expect("head")
        .to_owned()
        + "!CUT";
    http.push(200, &[], cut);
    let r = send(&app, &t, &s, "hi", "native").await;
    assert_eq!(
        native(&r.body).last().map(|e| e["status"].clone()),
        Some(json!("incomplete"))
    );
    // Broken by the provider before any output: most likely free, and not
    // estimated (the row says so: nothing, as reported).
    http.push(200, &[], "!CUT".to_owned());
    send(&app, &t, &s, "again", "native").await;
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let r = send(&app, &t, &s, "once more", "native").await;
    assert_eq!(
        native(&r.body).last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    let rows = ledger(&app).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let streamed = i64::try_from((3 * words.len()).div_ceil(4)).expect("tokens");
    assert_eq!(
        rows[0],
        (100, streamed, true),
        "reported input, estimated output"
    );
    assert_eq!(rows[1], (0, 0, false));
    assert_eq!(rows[2], (100, 50, false), "a complete call as reported");
    // Cut after the provider counted the output (its `message_delta`),
    // before the stream's end: its count stands.
    let counted = anthropic(&[words, words, words], &[], "end_turn");
    let cut = counted
        .split("event: message_stop")
        .next()
        .expect("head")
        .to_owned()
        // (The fake connection loses the last few bytes before its cut.)
        + &ev("ping", json!({"type": "ping"}))
        + "!CUT";
    http.push(200, &[], cut);
    send(&app, &t, &s, "and again", "native").await;
    let rows = ledger(&app).await;
    assert_eq!(
        rows[3],
        (100, 50, false),
        "the provider's own count: {rows:?}"
    );
    // The answer's usage (and so the run's cost) counts the estimate.
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs[1]["usage"]["output_tokens"], streamed);
    // Cut inside a thinking block: the thinking streamed so far counts,
    // though the run only gets thinking whole at its block's end.
    let mut thinking = full
        .split("event: content_block_start")
        .next()
        .expect("head")
        .to_owned();
    thinking += &ev(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
    );
    for _ in 0..2 {
        thinking += &ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":words}}),
        );
    }
    http.push(
        200,
        &[],
        thinking + &ev("ping", json!({"type": "ping"})) + "!CUT",
    );
    send(&app, &t, &s, "think", "native").await;
    let rows = ledger(&app).await;
    let thought = i64::try_from((2 * words.len()).div_ceil(4)).expect("tokens");
    assert_eq!(rows[4], (100, thought, true), "{rows:?}");
}

#[tokio::test]
async fn replay_after_any_point_gives_exactly_the_missing_events() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        200,
        &[],
        anthropic(&["a", "b", "c", "d", "e"], &[], "end_turn"),
    );
    let full = native(&send(&app, &t, &s, "hi", "native").await.body);
    let n = i64::try_from(full.len()).expect("len");
    for after in 0..=n {
        let r = app
            .get(&format!("/v1/sessions/{s}/events?after={after}"), Some(&t))
            .await;
        let got = native(&r.body);
        assert_eq!(
            got,
            full[usize::try_from(after).expect("idx")..].to_vec(),
            "after {after}"
        );
    }
    // Last-Event-ID wins over ?after=.
    let req = http::Request::get(format!("/v1/sessions/{s}/events?after=0"))
        .header("authorization", format!("Bearer {t}"))
        .header("last-event-id", (n - 2).to_string())
        .body(bytes::Bytes::new())
        .expect("req");
    let res = everjust_core::handle(&app.ports, req, everjust_core::Meta::default()).await;
    let everjust_core::Body::Stream(st) = res.into_body() else {
        panic!("stream")
    };
    use futures_util::StreamExt;
    let body = st.collect::<Vec<_>>().await.concat();
    assert_eq!(native(&body).len(), 2);
    for bad in ["-1", "abc", "1.5"] {
        app.get(&format!("/v1/sessions/{s}/events?after={bad}"), Some(&t))
            .await
            .problem(400, "invalid_resume_point");
    }
}

#[tokio::test]
async fn ag_ui_and_ai_sdk_encodings_carry_the_same_run() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        200,
        &[],
        anthropic(
            &["Hi ", "there"],
            &[("tu", "list_files", json!({}))],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["bye"], &[], "end_turn"));
    let native_events = native(&send(&app, &t, &s, "hi", "native").await.body);
    let last = native_events
        .last()
        .and_then(|e| e["seq"].as_i64())
        .expect("seq");
    let ag = app
        .get(&format!("/v1/sessions/{s}/events?protocol=ag-ui"), Some(&t))
        .await;
    let ag_events: Vec<Value> = sse(&ag.body)
        .into_iter()
        .map(|(_, d)| serde_json::from_str(&d).expect("json"))
        .collect();
    let types: Vec<&str> = ag_events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"RUN_STARTED"));
    assert_eq!(types.last(), Some(&"RUN_FINISHED"));
    for ty in [
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "STEP_STARTED",
    ] {
        assert!(types.contains(&ty), "{ty} missing in {types:?}");
    }
    let ag_text: String = ag_events
        .iter()
        .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(ag_text, "Hi therebye");
    let ai = app
        .get(
            &format!("/v1/sessions/{s}/events?protocol=ai-sdk"),
            Some(&t),
        )
        .await;
    assert_eq!(ai.headers["x-vercel-ai-ui-message-stream"], "v1");
    let parts = sse(&ai.body);
    assert_eq!(parts.last().map(|p| p.1.as_str()), Some("[DONE]"));
    let ai_events: Vec<Value> = parts
        .iter()
        .filter(|p| p.1 != "[DONE]")
        .map(|p| serde_json::from_str(&p.1).expect("json"))
        .collect();
    assert_eq!(
        ai_events.first().map(|e| e["type"].clone()),
        Some(json!("start"))
    );
    assert_eq!(
        ai_events.last().map(|e| e["type"].clone()),
        Some(json!("finish"))
    );
    assert!(ai_events
        .iter()
        .any(|e| e["type"] == "tool-input-available" && e["toolName"] == "list_files"));
    // Every SSE event of each encoding carries the native sequence number.
    assert!(sse(&ag.body)
        .iter()
        .all(|(id, _)| id.is_some_and(|i| (1..=last).contains(&i))));
}

/// A tier with room for more runs: the second run of one session is refused
/// by the statement that starts a run, and it writes nothing (no run, no
/// message, no audit event); a run that starts records its audit event.
#[tokio::test]
async fn a_run_start_refused_by_the_session_writes_nothing() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"concurrent_runs\": 5}'",
            &[],
        )
        .await
        .expect("limits");
    app.ports
        .sql
        .execute("INSERT INTO runs (id, session_id, owner_id, provider, model) SELECT 'run_busy', id, owner_id, 'demo', 'demo' FROM sessions", &[])
        .await
        .expect("insert");
    let audit = |action: &'static str| {
        let sql = app.ports.sql.clone();
        async move {
            sql.query(
                "SELECT target, detail->>'run_id' AS run_id FROM audit_events WHERE action = $1",
                &[action.into()],
            )
            .await
            .expect("audit")
        }
    };
    app.send_message(&t, &s, "x")
        .await
        .problem(409, "run_in_progress");
    assert_eq!(app.count("messages").await, 0, "no message");
    assert_eq!(app.count("runs").await, 1, "no run");
    assert!(audit("chat.run").await.is_empty(), "no audit event");
    // Once the session is free, a run starts and is audited.
    app.ports
        .sql
        .execute("DELETE FROM runs", &[])
        .await
        .expect("free");
    app.send_message(&t, &s, "x").await;
    let rows = audit("chat.run").await;
    let runs = app
        .ports
        .sql
        .query("SELECT id FROM runs", &[])
        .await
        .expect("runs");
    assert_eq!(rows.len(), 1, "one audit event");
    assert_eq!(
        rows[0].opt_text("target").expect("target").as_deref(),
        Some(s.as_str())
    );
    assert_eq!(
        rows[0].opt_text("run_id").expect("run_id"),
        Some(runs[0].text("id").expect("id"))
    );
    assert!(
        app.count("messages").await >= 1,
        "the user's message is stored"
    );
}

/// Sets the (only) user's limits override.
async fn set_limits(app: &TestApp, limits: Value) {
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = $1::text::jsonb",
            &[limits.to_string().as_str().into()],
        )
        .await
        .expect("limits");
}

/// The run is stored in the caller's first round trip, before the checks
/// that need the caller's row: a start that any of them refuses leaves no
/// run, message or audit event behind, and the session stays usable.
#[tokio::test]
async fn a_run_start_refused_by_the_callers_limits_leaves_nothing_behind() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let path = format!("/v1/sessions/{s}/messages");
    let nothing_stored = |why: &'static str| {
        let app = &app;
        async move {
            assert_eq!(app.count("runs").await, 0, "{why}: no run");
            assert_eq!(app.count("messages").await, 0, "{why}: no message");
            let audits = app
                .ports
                .sql
                .query(
                    "SELECT count(*)::int8 AS n FROM audit_events WHERE action = 'chat.run'",
                    &[],
                )
                .await
                .expect("audit")[0]
                .int("n")
                .expect("n");
            assert_eq!(audits, 0, "{why}: no audit event");
        }
    };
    for (limits, status, code) in [
        (
            json!({"allowed_models": ["gpt-"]}),
            402,
            "model_not_allowed",
        ),
        (json!({"model_tokens_month": 0}), 402, "quota_model_tokens"),
        (json!({"model_calls_day": 0}), 402, "quota_model_calls"),
        (json!({"concurrent_runs": 0}), 429, "quota_concurrent_runs"),
    ] {
        set_limits(&app, limits).await;
        app.json("POST", &path, Some(&t), json!({"content": "hi"}))
            .await
            .problem(status, code);
        nothing_stored(code).await;
    }
    // Over the API rate limit: refused after the caller's lookup too.
    // (The refused requests above count against it too.)
    set_limits(&app, json!({"api_requests_minute": 1})).await;
    assert_eq!(app.get("/v1/me", Some(&t)).await.status, 429);
    app.json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await
        .problem(429, "rate_limited");
    nothing_stored("rate_limited").await;
    // With the limits lifted, the same message starts a run.
    set_limits(&app, json!({"api_requests_minute": -1})).await;
    http.push(200, &[], anthropic(&["hello"], &[], "end_turn"));
    let r = app
        .json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(app.count("runs").await, 1);
    assert_eq!(
        messages(&app, &t, &s).await.len(),
        2,
        "the question and the answer"
    );
}

/// The budget a run's start weighs is this UTC month's and day's model use
/// on our keys (the daily totals the ledger's triggers keep, migration
/// 0009): not calls on the user's own key, not sandbox time, not last
/// month; and a ledger row removed stops counting.
#[tokio::test]
async fn the_budget_counts_this_months_model_calls_on_our_keys_only() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let sql = app.ports.sql.clone();
    let path = format!("/v1/sessions/{s}/messages");
    let owner = sql
        .query_opt("SELECT id FROM users", &[])
        .await
        .expect("user")
        .expect("one user")
        .text("id")
        .expect("id");
    // (id, kind, byok, tokens, of which kind, when): every kind of token counts.
    let now = "now()";
    let last_month =
        "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 day'";
    for (id, kind, byok, tokens, column, when) in [
        ("led_a", "model", false, 10, "output_tokens", now),
        ("led_b", "model", false, 20, "cache_read_tokens", now),
        ("led_own", "model", true, 1_000, "input_tokens", now),
        ("led_box", "sandbox", false, 0, "input_tokens", now),
        ("led_old", "model", false, 5_000, "input_tokens", last_month),
    ] {
        sql.execute(
            &format!(
                "INSERT INTO usage_ledger (id, owner_id, kind, provider, model, {column}, byok, created_at)
                 VALUES ($1, $2, $3, 'anthropic', 'claude-sonnet-4-5', $4, $5, {when})"
            ),
            &[id.into(), owner.as_str().into(), kind.into(), tokens.into(), byok.into()],
        )
        .await
        .expect("ledger row");
    }
    // 30 tokens and 2 calls are used: at those limits, refused.
    set_limits(&app, json!({"model_tokens_month": 30})).await;
    app.json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await
        .problem(402, "quota_model_tokens");
    set_limits(&app, json!({"model_calls_day": 2})).await;
    app.json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await
        .problem(402, "quota_model_calls");
    // One more of each: the user's own key, the sandbox and last month
    // would each have used it up.
    set_limits(
        &app,
        json!({"model_tokens_month": 31, "model_calls_day": 3}),
    )
    .await;
    http.push(200, &[], anthropic(&["hello"], &[], "end_turn"));
    let r = app
        .json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let today = |sql: Rc<dyn everjust_core::ports::sql::Sql>| async move {
        let row = sql
            .query_opt(
                "SELECT sum(calls)::int8 AS model_calls,
                        sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)::int8 AS model_tokens
                   FROM usage_days WHERE day = (now() AT TIME ZONE 'UTC')::date AND kind = 'model' AND NOT byok
                 HAVING count(*) > 0",
                &[],
            )
            .await
            .expect("totals")
            .expect("today's row");
        (
            row.int("model_calls").expect("calls"),
            row.int("model_tokens").expect("tokens"),
        )
    };
    let (calls, tokens) = today(sql.clone()).await;
    assert_eq!(calls, 3, "two rows and the run's call");
    sql.execute("DELETE FROM usage_ledger WHERE id = 'led_b'", &[])
        .await
        .expect("delete");
    assert_eq!(today(sql.clone()).await, (calls - 1, tokens - 20));
}

/// The run's start is committed behind the reads of its checks, and the run
/// goes on only once that commit succeeded: a start that cannot be made
/// durable (here a deferred check that fails at COMMIT) is a 500 that
/// leaves nothing behind and never calls the model, and the session stays
/// usable.
#[tokio::test]
async fn a_run_whose_start_fails_to_commit_never_calls_the_model() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let path = format!("/v1/sessions/{s}/messages");
    app.ports
        .sql
        .batch(
            "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
             CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON runs
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
        )
        .await
        .expect("trigger");
    http.push(200, &[], anthropic(&["never"], &[], "end_turn"));
    for streamed in [false, true] {
        let r = if streamed {
            send(&app, &t, &s, "hi", "native").await
        } else {
            app.json("POST", &path, Some(&t), json!({"content": "hi"}))
                .await
        };
        let j = r.problem(500, "internal");
        assert!(
            !j.to_string().contains("refused at commit"),
            "no internals in the answer: {j}"
        );
        assert_eq!(app.count("runs").await, 0, "no run");
        assert_eq!(app.count("messages").await, 0, "no message");
        assert!(http.requests.borrow().is_empty(), "the model was called");
    }
    app.ports
        .sql
        .batch("DROP TRIGGER refuse_at_commit ON runs")
        .await
        .expect("drop");
    let r = app
        .json("POST", &path, Some(&t), json!({"content": "hi"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(r.json()["status"], "complete");
    assert_eq!(messages(&app, &t, &s).await.len(), 2);
}

/// The signed-up user's id, and a connection of its own on which a run of
/// theirs (`run_held`) is started in `session`, its transaction left open.
async fn held_run_start(app: &TestApp, session: &str) -> (TestApp, String) {
    use everjust_core::db::chat as db;
    let owner = app
        .ports
        .sql
        .query("SELECT id FROM users", &[])
        .await
        .expect("user")[0]
        .text("id")
        .expect("id");
    let holder = app.on_own_connection().await;
    let (content, detail) = (json!([{"type": "text", "text": "hi"}]), json!({}));
    let start = db::RunStart {
        run_id: "run_held",
        session_id: session,
        owner_id: &owner,
        provider: "anthropic",
        model: "claude-sonnet-4-5",
        message_id: "msg_held",
        content: &content,
        audit_id: "aud_held",
        audit_detail: &detail,
        ip: None,
        request_id: "req_held",
    };
    let sql = holder.ports.sql.as_ref();
    sql.batch("BEGIN").await.expect("begin");
    assert!(db::start_run(sql, &start).await.expect("start").is_some());
    (holder, owner)
}

/// A room gets its run before the run's start is committed; the room's
/// connection runs `db::AFTER_RUN_START` before its other statements,
/// which holds them until that commit, so they see the run (without it the
/// read below finds nothing).
#[tokio::test]
async fn a_rooms_statements_wait_for_its_runs_start_to_commit() {
    use everjust_core::db::chat as db;
    let (app, _http, _t, s) = setup(ANTHROPIC).await;
    let (starting, owner) = held_run_start(&app, &s).await;
    let sql = starting.ports.sql.as_ref();
    let room = app.on_own_connection().await;
    let room = room.ports.sql.as_ref();
    let read = async {
        room.execute(db::AFTER_RUN_START, &[owner.as_str().into()])
            .await
            .expect("gate");
        room.query_opt("SELECT status FROM runs WHERE id = 'run_held'", &[])
            .await
    };
    let mut read = std::pin::pin!(read);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut read).await;
    assert!(
        early.is_err(),
        "the room read before the start was committed"
    );
    sql.batch("COMMIT").await.expect("commit");
    let row = read.await.expect("read").expect("the run, once committed");
    assert_eq!(row.text("status").expect("status"), "running");
}

/// The concurrent-runs limit holds for starts that race: a start waits for
/// another start of the same owner still in its transaction, and then counts
/// that run (here the other start is held open by hand; read before the
/// start's lock, the count saw no run and let both go).
#[tokio::test]
async fn racing_starts_of_one_owner_respect_the_concurrent_runs_limit() {
    let (app, _http, t, s1) = setup(ANTHROPIC).await;
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"concurrent_runs\": 1}'",
            &[],
        )
        .await
        .expect("limits");
    let p = app
        .ports
        .sql
        .query("SELECT project_id FROM sessions", &[])
        .await
        .expect("project")[0]
        .text("project_id")
        .expect("project_id");
    let s2 = app.session(&t, &p).await;
    let (holder, _) = held_run_start(&app, &s1).await;
    let sql = holder.ports.sql.as_ref();
    let racer = app.on_own_connection().await;
    let path = format!("/v1/sessions/{s2}/messages");
    let send = racer.json("POST", &path, Some(&t), json!({"content": "hi"}));
    let mut send = std::pin::pin!(send);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut send).await;
    assert!(early.is_err(), "the start did not wait for the other one");
    sql.batch("COMMIT").await.expect("commit");
    send.await.problem(429, "quota_concurrent_runs");
    assert_eq!(app.count("runs").await, 1, "only the held run");
}

/// Cancelling a run that its room does not hold ends it in Postgres, so the
/// session is usable again; a run that only just started (still on its way
/// to the room) is left to its start.
#[tokio::test]
async fn cancelling_a_run_its_room_lost_ends_it() {
    let (mut app, _http, t, s) = setup(ANTHROPIC).await;
    // A room that holds no run: where a run lost before its room stored it
    // (its isolate died between the start's round trip and the room's
    // commit) would leave its session. The Workers room answers `/cancel`
    // the same way when it holds nothing (the held case runs in the e2e suite).
    app.ports.rooms = Some(Rc::new(crate::helpers::SpecRoom::default()));
    let insert = |id: &'static str, age_secs: i64| {
        let sql = app.ports.sql.clone();
        let s = s.clone();
        async move {
            sql.execute(
                "INSERT INTO runs (id, session_id, owner_id, provider, model, started_at)
                 SELECT $1, id, owner_id, 'demo', 'demo', now() - make_interval(secs => $3::float8) FROM sessions WHERE id = $2",
                &[id.into(), s.as_str().into(), age_secs.into()],
            )
            .await
            .expect("insert");
        }
    };
    let status = |id: &'static str| {
        let sql = app.ports.sql.clone();
        async move {
            sql.query("SELECT status FROM runs WHERE id = $1", &[id.into()])
                .await
                .expect("status")[0]
                .text("status")
                .expect("status")
        }
    };
    let cancel_path = format!("/v1/sessions/{s}/cancel");
    let cancel = || app.json("POST", &cancel_path, Some(&t), json!({}));
    insert("run_young", 1).await;
    let r = cancel().await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (202, Some("cancelling")),
        "{}",
        r.json()
    );
    assert_eq!(
        status("run_young").await,
        "running",
        "a run just started is left to its start"
    );
    app.ports
        .sql
        .execute("DELETE FROM runs", &[])
        .await
        .expect("delete");
    insert("run_lost", 60).await;
    let r = cancel().await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (202, Some("cancelled")),
        "{}",
        r.json()
    );
    assert_eq!(status("run_lost").await, "cancelled");
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/cancel"),
        Some(&t),
        json!({}),
    )
    .await
    .problem(409, "no_active_run");
}

#[tokio::test]
async fn a_second_concurrent_run_is_a_conflict() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    app.ports
        .sql
        .execute("INSERT INTO runs (id, session_id, owner_id, provider, model) SELECT 'run_busy', id, owner_id, 'demo', 'demo' FROM sessions", &[])
        .await
        .expect("insert");
    app.send_message(&t, &s, "x")
        .await
        .problem(409, "run_in_progress");
    assert_eq!(app.count("messages").await, 0, "nothing stored");
    let c = app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/cancel"),
            Some(&t),
            json!({}),
        )
        .await;
    assert_eq!(
        (c.status, c.json()["run_id"].as_str()),
        (202, Some("run_busy"))
    );
}

#[tokio::test]
async fn a_run_whose_driver_died_is_marked_incomplete_with_its_partial_text() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    let sql = app.ports.sql.as_ref();
    sql.execute("INSERT INTO runs (id, session_id, owner_id, provider, model, heartbeat_at) SELECT 'run_dead', id, owner_id, 'anthropic', 'm', now() - interval '10 minutes' FROM sessions", &[])
        .await
        .expect("run");
    for (seq, body) in [
        (1, json!({"type":"text_start","block_id":"b"})),
        (
            2,
            json!({"type":"text_delta","block_id":"b","delta":"half an "}),
        ),
        (
            3,
            json!({"type":"text_delta","block_id":"b","delta":"answer"}),
        ),
    ] {
        let mut e = body;
        e["seq"] = seq.into();
        e["run_id"] = "run_dead".into();
        sql.execute("INSERT INTO run_events (session_id, seq, run_id, event) SELECT id, $1, 'run_dead', $2::jsonb FROM sessions", &[everjust_core::ports::sql::Value::Int(seq), e.to_string().into()])
            .await
            .expect("event");
    }
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (
            msgs[0]["status"].as_str(),
            msgs[0]["content"][0]["text"].as_str()
        ),
        (Some("incomplete"), Some("half an answer"))
    );
    let tail = native(
        &app.get(&format!("/v1/sessions/{s}/events?after=3"), Some(&t))
            .await
            .body,
    );
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["status"], "incomplete");
}

#[tokio::test]
async fn bad_messages_and_foreign_sessions_are_refused() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    app.send_message(&t, &s, "   ")
        .await
        .problem(400, "empty_message");
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/messages"),
        Some(&t),
        json!({"content": "x".repeat(64 * 1024 + 1)}),
    )
    .await
    .problem(413, "message_too_large");
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/messages"),
        Some(&t),
        json!({"content": "x", "provider": "nope"}),
    )
    .await
    .problem(400, "provider_unavailable");
    app.get(&format!("/v1/sessions/{s}/events?protocol=xml"), Some(&t))
        .await
        .problem(400, "invalid_protocol");
    let (eve, _, _) = app.signup("eve@example.com").await;
    app.get(&format!("/v1/sessions/{s}/messages"), Some(&eve))
        .await
        .problem(404, "not_found");
    app.send_message(&eve, &s, "x")
        .await
        .problem(404, "not_found");
    app.get(&format!("/v1/sessions/{s}/events"), Some(&eve))
        .await
        .problem(404, "not_found");
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/ws-ticket"),
        Some(&eve),
        json!({}),
    )
    .await
    .problem(404, "not_found");
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/cancel"),
        Some(&eve),
        json!({}),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(app.count("messages").await, 0);
    assert_eq!(app.count("runs").await, 0);
}

#[tokio::test]
async fn websocket_tickets_are_single_use_and_bound_to_their_session() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    let ticket = app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/ws-ticket"),
            Some(&t),
            json!({}),
        )
        .await
        .json()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let ws = |ticket: String, session: String| {
        let app = &app;
        async move {
            let req = http::Request::get(format!("/v1/sessions/{session}/ws?ticket={ticket}"))
                .header("upgrade", "websocket")
                .body(bytes::Bytes::new())
                .expect("req");
            let res = everjust_core::handle(&app.ports, req, everjust_core::Meta::default()).await;
            res.status().as_u16()
        }
    };
    // No rooms in-process: a valid ticket learns so (501) and is not used up by it.
    assert_eq!(ws(ticket.clone(), s.clone()).await, 501);
    assert_eq!(ws(ticket, s.clone()).await, 501);
    assert_eq!(ws("forged".into(), s.clone()).await, 401);
    let other = app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/ws-ticket"),
            Some(&t),
            json!({}),
        )
        .await
        .json()["ticket"]
        .as_str()
        .expect("t")
        .to_owned();
    assert_eq!(
        ws(other, "ses_00000000000000000000000000".into()).await,
        404
    );
    let expiring = app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/ws-ticket"),
            Some(&t),
            json!({}),
        )
        .await
        .json()["ticket"]
        .as_str()
        .expect("t")
        .to_owned();
    app.clock.advance_ms(61_000);
    assert_eq!(ws(expiring, s).await, 401);
}

#[tokio::test]
async fn joining_mid_block_opens_what_is_open_for_ag_ui_and_ai_sdk() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        200,
        &[],
        anthropic(
            &["a", "b", "c"],
            &[("tu", "list_files", json!({}))],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["d"], &[], "end_turn"));
    let full = native(&send(&app, &t, &s, "hi", "native").await.body);
    let mid_text = full
        .iter()
        .find(|e| e["type"] == "text_delta")
        .and_then(|e| e["seq"].as_i64())
        .expect("delta");
    let ag = app
        .get(
            &format!("/v1/sessions/{s}/events?protocol=ag-ui&after={mid_text}"),
            Some(&t),
        )
        .await;
    let types: Vec<String> = sse(&ag.body)
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_owned()
        })
        .collect();
    assert_eq!(
        &types[..3],
        ["RUN_STARTED", "STEP_STARTED", "TEXT_MESSAGE_START"],
        "{types:?}"
    );
    assert_eq!(types[3], "TEXT_MESSAGE_CONTENT");
    let mid_tool = full
        .iter()
        .find(|e| e["type"] == "tool_call_delta")
        .and_then(|e| e["seq"].as_i64())
        .expect("tool delta");
    let ai = app
        .get(
            &format!("/v1/sessions/{s}/events?protocol=ai-sdk&after={mid_tool}"),
            Some(&t),
        )
        .await;
    let parts = sse(&ai.body);
    let ai_types: Vec<String> = parts
        .iter()
        .filter(|p| p.1 != "[DONE]")
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_owned()
        })
        .collect();
    assert_eq!(
        &ai_types[..3],
        ["start", "start-step", "tool-input-start"],
        "{ai_types:?}"
    );
    // A group's parts share one id only on its last SSE event.
    let ids: Vec<i64> = parts.iter().filter_map(|(id, _)| *id).collect();
    let mut sorted = ids.clone();
    sorted.dedup();
    assert_eq!(ids, sorted, "no two SSE events carry the same id");
}

#[tokio::test]
async fn invalid_tool_json_goes_back_to_the_model_as_an_empty_object() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let mut broken = anthropic(
        &[],
        &[("t5", "write_file", json!({"path": "b.txt", "content": "y"}))],
        "tool_use",
    );
    broken = broken.replace(r#""partial_json":"{\"con""#, r#""partial_json":"{{{con""#);
    http.push(200, &[], broken);
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let events = native(&send(&app, &t, &s, "go", "native").await.body);
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    let second = http.requests.borrow()[1].1.clone();
    let assistant = &second["messages"][1];
    assert_eq!(assistant["content"][0]["type"], "tool_use");
    assert_eq!(assistant["content"][0]["input"], json!({}));
    assert_eq!(second["messages"][2]["content"][0]["is_error"], true);
    // The next run in the session works: the stored history is valid.
    http.push(200, &[], anthropic(&["again"], &[], "end_turn"));
    let next = native(&send(&app, &t, &s, "more", "native").await.body);
    assert_eq!(
        next.last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    assert_eq!(
        http.requests.borrow()[2].1["messages"][1]["content"][0]["input"],
        json!({})
    );
}

#[tokio::test]
async fn a_silent_run_keeps_the_event_stream_alive_with_sse_comments() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    // A run that is alive (fresh heartbeat) and says nothing, like one in a
    // long tool call.
    app.ports
        .sql
        .execute("INSERT INTO runs (id, session_id, owner_id, provider, model) SELECT 'run_quiet', id, owner_id, 'demo', 'demo' FROM sessions", &[])
        .await
        .expect("insert");
    let req = http::Request::get(format!("/v1/sessions/{s}/events?after=0"))
        .header("authorization", format!("Bearer {t}"))
        .body(bytes::Bytes::new())
        .expect("req");
    let res = everjust_core::handle(&app.ports, req, everjust_core::Meta::default()).await;
    assert_eq!(res.status(), 200);
    let everjust_core::Body::Stream(mut st) = res.into_body() else {
        panic!("stream")
    };
    use futures_util::StreamExt;
    let before = app.ports.clock.now_ms();
    // The test clock moves when the reader sleeps: the first chunk is the
    // comment, sent after the stream has been silent for 15 s.
    let first = st.next().await.expect("a chunk");
    assert_eq!(
        &first[..],
        everjust_core::chat::encode::KEEP_ALIVE.as_bytes()
    );
    let silent = app.ports.clock.now_ms() - before;
    assert!((15_000..16_000).contains(&silent), "after {silent} ms");
}

/// A run on the server's key hands its room no key (only a run on the
/// caller's own key carries one, see billing.rs).
#[tokio::test]
async fn a_run_on_the_servers_key_hands_its_room_no_key() {
    let (mut app, _http, t, s) = setup(ANTHROPIC).await;
    let room = Rc::new(crate::helpers::SpecRoom::default());
    app.ports.rooms = Some(room.clone());
    let r = app.send_message(&t, &s, "hello").await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_server_timing(&r, &["admit", "room"]);
    let (wire, spec) = room.last();
    assert!(!wire.contains("sk-test"), "{wire}");
    assert!(!spec.byok);
    assert!(spec.preload.expect("preloaded").own_key.is_none());
}

/// Asserts a run start's `Server-Timing`: these phases, in this order, each
/// `name;dur=<whole ms>`.
fn assert_server_timing(r: &Res, phases: &[&str]) {
    let value = r
        .headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let names: Vec<&str> = value
        .split(", ")
        .map(|m| {
            let (name, dur) = m.split_once(";dur=").unwrap_or_default();
            assert!(dur.parse::<u64>().is_ok(), "{value}");
            name
        })
        .collect();
    assert_eq!(names, phases, "{value}");
}

/// Without rooms (Spin) the run lives in its request: its start's timing
/// has the admission only, streamed or not.
#[tokio::test]
async fn a_run_start_says_how_long_its_admission_took() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(200, &[], anthropic(&["hi"], &[], "end_turn"));
    let r = app.send_message(&t, &s, "hello").await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_server_timing(&r, &["admit"]);
    http.push(200, &[], anthropic(&["again"], &[], "end_turn"));
    let r = send(&app, &t, &s, "hello again", "native").await;
    assert_eq!(r.status, 200);
    assert_server_timing(&r, &["admit"]);
}

#[tokio::test]
async fn edit_file_counts_overlapping_occurrences_as_ambiguous() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let project = app.get("/v1/projects", Some(&t)).await.json()["items"][0]["id"]
        .as_str()
        .expect("p")
        .to_owned();
    let path = format!("/v1/projects/{project}/files/a.html");
    let before = "</div>\n</div>\n</div>";
    app.request("PUT", &path, Some(&t), None, before).await;
    http.push(
        200,
        &[],
        anthropic(
            &[],
            &[(
                "e1",
                "edit_file",
                json!({"path": "a.html", "old": "</div>\n</div>", "new": "</div>"}),
            )],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    let events = native(&send(&app, &t, &s, "edit", "native").await.body);
    let result = events
        .iter()
        .find(|e| e["type"] == "tool_result")
        .expect("a tool result");
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result["output"]
            .as_str()
            .is_some_and(|o| o.contains("2 times")),
        "{result}"
    );
    assert_eq!(app.get(&path, Some(&t)).await.body, before);
}

/// A stop at the token limit may cut a tool call's input: the call does
/// not run, the answer is stored as incomplete without it, and the next
/// message's history holds no call without its result.
#[tokio::test]
async fn a_stop_at_the_token_limit_is_incomplete_and_runs_no_call() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    http.push(
        200,
        &[],
        anthropic(
            &["Writing it"],
            &[(
                "w1",
                "write_file",
                json!({"path": "cut.html", "content": "<p>"}),
            )],
            "max_tokens",
        ),
    );
    let events = native(&send(&app, &t, &s, "write", "native").await.body);
    let last = events.last().expect("events");
    assert_eq!(
        (
            last["type"].as_str(),
            last["status"].as_str(),
            last["stop_reason"].as_str()
        ),
        (Some("run_finished"), Some("incomplete"), Some("max_tokens")),
        "{last}"
    );
    assert!(!events.iter().any(|e| e["type"] == "tool_result"));
    let project = app.get("/v1/projects", Some(&t)).await.json()["items"][0]["id"]
        .as_str()
        .expect("p")
        .to_owned();
    assert_eq!(
        app.get(&format!("/v1/projects/{project}/files/cut.html"), Some(&t))
            .await
            .status,
        404
    );
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs[1]["status"], "incomplete");
    assert_eq!(
        msgs[1]["content"],
        json!([{"type": "text", "text": "Writing it"}])
    );
    http.push(200, &[], anthropic(&["ok"], &[], "end_turn"));
    send(&app, &t, &s, "again", "native").await;
    let sent = http.requests.borrow().last().cloned().expect("a call").1;
    assert!(
        !sent.to_string().contains("tool_use"),
        "no dangling call in the history: {sent}"
    );
}

/// Postgres keeps no NUL in text: a message holding one is refused before
/// anything is stored, a cursor holding one is a bad cursor, and a NUL the
/// model wrote is stored as U+FFFD rather than losing the answer.
#[tokio::test]
async fn nul_characters_are_refused_in_input_and_replaced_in_model_output() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let before = app.count("messages").await;
    app.json(
        "POST",
        &format!("/v1/sessions/{s}/messages"),
        Some(&t),
        json!({"content": "hi\u{0}there"}),
    )
    .await
    .problem(400, "invalid_body");
    app.json(
        "POST",
        "/v1/projects",
        Some(&t),
        json!({"name": "n", "description": "a\u{0}"}),
    )
    .await
    .problem(400, "invalid_body");
    assert_eq!(app.count("messages").await, before);
    assert_eq!(app.count("runs").await, 0);
    // base64url of "c1:\0"
    app.get("/v1/projects?cursor=YzE6AA", Some(&t))
        .await
        .problem(400, "invalid_cursor");
    http.push(200, &[], anthropic(&["zero \u{0} byte"], &[], "end_turn"));
    let events = native(&send(&app, &t, &s, "say it", "native").await.body);
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some(json!("complete"))
    );
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs[1]["status"], "complete");
    assert_eq!(msgs[1]["content"][0]["text"], "zero \u{fffd} byte");
}

/// A run stopped inside a tool call (here its connection cut) ends in
/// AG-UI with the call, the step and then the run closed, in that order,
/// as `@ag-ui/client` requires; and in the AI SDK stream the call's input
/// is an error and the step finishes before the end.
#[tokio::test]
async fn a_run_stopped_inside_a_call_closes_it_before_its_end() {
    for (protocol, expected) in [
        ("ag-ui", ["TOOL_CALL_END", "STEP_FINISHED", "RUN_ERROR"]),
        ("ai-sdk", ["tool-input-error", "finish-step", "error"]),
    ] {
        let (app, http, t, s) = setup(ANTHROPIC).await;
        let full = anthropic(
            &[],
            &[(
                "w1",
                "write_file",
                json!({"path": "a.html", "content": "x".repeat(200)}),
            )],
            "tool_use",
        );
        let cut = full.find("input_json_delta").expect("a fragment") + 400;
        http.push(200, &[], full[..cut].to_owned() + "!CUT");
        let r = send(&app, &t, &s, "write", protocol).await;
        let types: Vec<String> = sse(&r.body)
            .into_iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
            .filter_map(|v| v["type"].as_str().map(str::to_owned))
            .collect();
        let tail: Vec<&str> = types
            .iter()
            .map(String::as_str)
            .filter(|t| expected.contains(t))
            .collect();
        assert_eq!(tail, expected, "{protocol}: {types:?}");
    }
}

/// A room keeps its session's events in its own storage, which no Postgres
/// cascade reaches: deleting a project purges the rooms of its sessions,
/// erasing the account purges the rooms of all of them, and another
/// user's sessions are left alone.
#[tokio::test]
async fn deleting_a_project_or_the_account_purges_the_sessions_rooms() {
    let (mut app, _http, t, first) = setup(ANTHROPIC).await;
    let room = Rc::new(crate::helpers::SpecRoom::default());
    app.ports.rooms = Some(room.clone());
    let project = app.get("/v1/projects", Some(&t)).await.json()["items"][0]["id"]
        .as_str()
        .expect("p")
        .to_owned();
    let second = app.session(&t, &project).await;
    let other_project = app.project(&t, "other").await;
    let third = app.session(&t, &other_project).await;
    let (bob, _, _) = app.signup("bob@example.com").await;
    let bobs_project = app.project(&bob, "bobs").await;
    let bobs = app.session(&bob, &bobs_project).await;
    room.1.borrow_mut().clear();

    let r = app
        .request(
            "DELETE",
            &format!("/v1/projects/{project}"),
            Some(&t),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    let mut purged = room.1.take();
    purged.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(purged, expected);
    // A project that is not there (or not the caller's) purges nothing.
    app.request(
        "DELETE",
        &format!("/v1/projects/{bobs_project}"),
        Some(&t),
        None,
        "",
    )
    .await
    .problem(404, "not_found");
    assert!(room.1.borrow().is_empty());

    let r = app.request("DELETE", "/v1/me", Some(&t), None, "").await;
    assert_eq!(r.status, 204);
    assert_eq!(room.1.take(), vec![third]);
    assert!(!room.1.borrow().contains(&bobs));
}

/// Ages the session's running run as if its driver had been silent for ten
/// minutes.
async fn age_running_run(app: &TestApp) {
    app.ports
        .sql
        .execute(
            "UPDATE runs SET heartbeat_at = now() - interval '10 minutes' WHERE status = 'running'",
            &[],
        )
        .await
        .expect("age");
}

/// A reader sees events as they come, before they are stored. When the
/// driver dies with such events, the run's end (and the next run) is
/// numbered past them: a client resuming from the last number it saw gets
/// the end, instead of nothing.
#[tokio::test]
async fn a_lost_runs_end_comes_after_every_number_its_reader_saw() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let deltas: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    let deltas: Vec<&str> = deltas.iter().map(String::as_str).collect();
    // The stream stalls before the block ends: nothing forces a flush.
    let full = anthropic(&deltas, &[], "end_turn");
    let cut = full.find("event: content_block_stop").expect("block stop");
    http.push(200, &[], format!("{}!HANG", &full[..cut]));
    let req = http::Request::post(format!("/v1/sessions/{s}/messages?protocol=native"))
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(bytes::Bytes::from(json!({"content": "hi"}).to_string()))
        .expect("req");
    let res = everjust_core::handle(&app.ports, req, everjust_core::Meta::default()).await;
    assert!(res
        .extensions()
        .get::<everjust_core::http::body::DrivesWork>()
        .is_some());
    let everjust_core::Body::Stream(mut st) = res.into_body() else {
        panic!("stream")
    };
    use futures_util::StreamExt;
    let mut seen: Vec<u8> = Vec::new();
    while native(&seen).len() < 40 {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), st.next())
            .await
            .expect("events come")
            .expect("a chunk");
        seen.extend_from_slice(&chunk);
    }
    let seen = native(&seen);
    let last_seen = seen
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .max()
        .expect("seq");
    // The driver dies with its request (a process that went down).
    drop(st);
    let stored = app
        .ports
        .sql
        .query_opt("SELECT coalesce(max(seq), 0) AS n FROM run_events", &[])
        .await
        .expect("max")
        .expect("row")
        .int("n")
        .expect("n");
    assert!(
        stored < last_seen,
        "the reader saw events never stored ({stored} stored, {last_seen} seen)"
    );
    age_running_run(&app).await;
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs.last().expect("answer")["status"], "incomplete");
    let resumed = native(
        &app.get(
            &format!("/v1/sessions/{s}/events?after={last_seen}"),
            Some(&t),
        )
        .await
        .body,
    );
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(
        (
            resumed[0]["type"].as_str(),
            resumed[0]["stop_reason"].as_str()
        ),
        (Some("run_finished"), Some("driver_lost"))
    );
    let end = resumed[0]["seq"].as_i64().expect("seq");
    http.push(200, &[], anthropic(&["again"], &[], "end_turn"));
    let next = native(&send(&app, &t, &s, "again", "native").await.body);
    assert_eq!(next[0]["type"], "run_started");
    assert!(next[0]["seq"].as_i64().expect("seq") > end);
}

/// Two readers that find the same run lost at once end it once: one
/// incomplete answer, one end.
#[tokio::test]
async fn a_lost_run_found_by_two_readers_at_once_is_ended_once() {
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    let sql = app.ports.sql.as_ref();
    sql.execute("INSERT INTO runs (id, session_id, owner_id, provider, model) SELECT 'run_dead', id, owner_id, 'anthropic', 'm' FROM sessions", &[])
        .await
        .expect("run");
    sql.execute("INSERT INTO run_events (session_id, seq, run_id, event) SELECT id, 1, 'run_dead', '{\"type\":\"text_start\",\"block_id\":\"b\",\"seq\":1,\"run_id\":\"run_dead\"}'::jsonb FROM sessions", &[])
        .await
        .expect("event");
    age_running_run(&app).await;
    let (a, b) = (app.on_own_connection().await, app.on_own_connection().await);
    let path = format!("/v1/sessions/{s}/messages");
    let (ra, rb) = Box::pin(futures_util::future::join(
        a.get(&path, Some(&t)),
        b.get(&path, Some(&t)),
    ))
    .await;
    assert_eq!((ra.status, rb.status), (200, 200));
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let ends = sql
        .query(
            "SELECT seq FROM run_events WHERE event->>'type' = 'run_finished'",
            &[],
        )
        .await
        .expect("ends");
    assert_eq!(ends.len(), 1);
}

/// A driver about to run a long tool call says so: while the call may still
/// run, readers do not take the silent run for lost; once it has ended,
/// silence counts again.
#[tokio::test]
async fn a_run_in_a_long_tool_call_is_not_taken_for_lost() {
    use everjust_core::chat::agent::RunSink;
    let (app, _http, t, s) = setup(ANTHROPIC).await;
    let sql = app.ports.sql.as_ref();
    sql.execute("INSERT INTO runs (id, session_id, owner_id, provider, model) SELECT 'run_busy', id, owner_id, 'anthropic', 'm' FROM sessions", &[])
        .await
        .expect("run");
    let spec: everjust_core::chat::agent::RunSpec = serde_json::from_value(json!({
        "run_id": "run_busy", "session_id": s, "project_id": "p", "owner_id": "o",
        "user_message_id": "m1", "assistant_message_id": "m2", "provider": "anthropic",
        "model": "m", "byok": false, "first_seq": 0, "started_ms": 0,
    }))
    .expect("spec");
    let sink = everjust_core::chat::inline::PgLogSink::new(app.ports.clone(), &spec, None);
    sink.emit(
        "run_busy",
        everjust_core::chat::events::EventBody::StepStarted { step: 1 },
    )
    .await
    .expect("emit");
    // A 600 s command is about to run; its driver went quiet 10 minutes ago.
    sink.quiet_for(900).await.expect("quiet");
    sql.execute(
        "UPDATE runs SET heartbeat_at = heartbeat_at - interval '10 minutes'",
        &[],
    )
    .await
    .expect("age");
    // What it emitted before was stored when it went quiet.
    let stored = sql
        .query("SELECT seq FROM run_events WHERE run_id = 'run_busy'", &[])
        .await
        .expect("events");
    assert_eq!(stored.len(), 1);
    assert!(
        messages(&app, &t, &s).await.is_empty(),
        "not taken for lost"
    );
    // The call ended: its result brings the heartbeat back to now, so a
    // driver that dies after it is found two minutes later, not 15.
    sink.emit(
        "run_busy",
        everjust_core::chat::events::EventBody::ToolResult {
            tool_call_id: "call_1".into(),
            output: "ok".into(),
            is_error: false,
        },
    )
    .await
    .expect("emit");
    sql.execute(
        "UPDATE runs SET heartbeat_at = heartbeat_at - interval '3 minutes'",
        &[],
    )
    .await
    .expect("age");
    let msgs = messages(&app, &t, &s).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["status"], "incomplete");
}

/// Records what a run asks of its sink; says "cancel" from its
/// `cancel_at`-th question on.
#[derive(Default)]
struct SpySink {
    seq: std::cell::Cell<i64>,
    events: std::cell::RefCell<Vec<String>>,
    asked: std::cell::Cell<u32>,
    cancel_at: Option<u32>,
    /// The emit of the n-th event of this type fails (storage down).
    fail_on: Option<(&'static str, usize)>,
    /// The `run_finished` events emitted, whole.
    ends: std::cell::RefCell<Vec<serde_json::Value>>,
}

#[async_trait::async_trait(?Send)]
impl everjust_core::chat::agent::RunSink for SpySink {
    async fn emit(
        &self,
        run_id: &str,
        body: everjust_core::chat::events::EventBody,
    ) -> everjust_core::ApiResult<everjust_core::chat::events::Event> {
        self.seq.set(self.seq.get() + 1);
        let ev = everjust_core::chat::events::Event {
            seq: self.seq.get(),
            run_id: run_id.to_owned(),
            body,
        };
        let v = serde_json::to_value(&ev).expect("event");
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        if let Some((failing, n)) = self.fail_on {
            let before = self
                .events
                .borrow()
                .iter()
                .filter(|e| **e == failing)
                .count();
            if kind == failing && before + 1 == n {
                return Err(everjust_core::ApiError::internal("storage down"));
            }
        }
        if kind == "run_finished" {
            self.ends.borrow_mut().push(v);
        }
        self.events.borrow_mut().push(kind);
        Ok(ev)
    }
    async fn cancel_requested(&self) -> bool {
        self.asked.set(self.asked.get() + 1);
        self.cancel_at.is_some_and(|n| self.asked.get() >= n)
    }
    async fn quiet_for(&self, secs: i64) -> everjust_core::ApiResult<()> {
        self.events.borrow_mut().push(format!("quiet {secs}"));
        Ok(())
    }
}

/// Before each `run_command` call runs, a run tells its sink how long it
/// may be silent: the caller's command time limit, plus the sandbox's
/// start-up (the result of the call before ended the last announcement).
/// The spec of a run started in `session`, as its room would get it.
async fn room_spec(
    app: &mut TestApp,
    t: &str,
    session: &str,
) -> everjust_core::chat::agent::RunSpec {
    let room = Rc::new(crate::helpers::SpecRoom::default());
    app.ports.rooms = Some(room.clone());
    assert_eq!(app.send_message(t, session, "build it").await.status, 202);
    app.ports.rooms = None;
    room.last().1
}

#[tokio::test]
async fn a_run_announces_how_long_its_commands_may_be_silent() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    let limit = spec
        .preload
        .as_ref()
        .expect("preload")
        .limits
        .command_timeout_secs;
    let tools: &[(&str, &str, Value)] = &[
        ("c0", "write_file", json!({"path": "a.txt", "content": "A"})),
        ("c1", "run_command", json!({"command": "npm test"})),
        ("c2", "run_command", json!({"command": "npm run build"})),
    ];
    http.push(200, &[], anthropic(&[], tools, "tool_use"));
    http.push(200, &[], anthropic(&["done"], &[], "end_turn"));
    let sink = SpySink::default();
    everjust_core::chat::agent::run(&app.ports, &spec, &sink).await;
    let events = sink.events.borrow();
    let from = events
        .iter()
        .position(|e| e == "step_finished")
        .expect("a step");
    let quiet = format!("quiet {}", limit + 180);
    assert_eq!(
        events[from + 1..from + 6],
        ["tool_result", &quiet, "tool_result", &quiet, "tool_result"],
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| e.starts_with("quiet")).count(), 2);
}

/// A stored message: its status, its content blocks and its input tokens.
async fn stored_message(app: &TestApp, id: &str) -> (String, Value, i64) {
    let row = app
        .ports
        .sql
        .query_opt(
            "SELECT status, content::text AS content, input_tokens FROM messages WHERE id = $1",
            &[id.into()],
        )
        .await
        .expect("read")
        .expect("stored");
    let content = serde_json::from_str(&row.text("content").expect("content")).expect("json");
    (
        row.text("status").expect("status"),
        content,
        row.int("input_tokens").expect("tokens"),
    )
}

/// The same run again: its answer removed, running once more.
async fn clear(app: &TestApp, run_id: &str) {
    app.ports
        .sql
        .execute("DELETE FROM messages WHERE role = 'assistant'", &[])
        .await
        .expect("clear");
    app.ports
        .sql
        .execute(
            "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE id = $1",
            &[run_id.into()],
        )
        .await
        .expect("running again");
}

/// A model stream that goes silent mid-answer: the run does not wait for
/// ever. It ends as incomplete with the text so far once the model has
/// said nothing for two minutes; sooner when the user cancels; at the
/// run's wall time when that comes first.
#[tokio::test]
async fn a_silent_model_stream_ends_by_stall_cancel_or_time_limit() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    let full = anthropic(&["half ", "an answer"], &[], "end_turn");
    let hang = format!(
        "{}!HANG",
        &full[..full.find("event: content_block_stop").expect("stop")]
    );
    let run = |sink: SpySink, spec: everjust_core::chat::agent::RunSpec| {
        let app = &app;
        async move {
            let started = app.ports.clock.now_ms();
            let outcome = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                everjust_core::chat::agent::run(&app.ports, &spec, &sink),
            )
            .await
            .expect("the run ends");
            let waited = app.ports.clock.now_ms() - started;
            (outcome, waited, sink.events.take())
        }
    };
    // Silent: a stall, after two minutes.
    http.push(200, &[], hang.clone());
    let (outcome, waited, events) = run(SpySink::default(), spec.clone()).await;
    assert_eq!(
        (outcome.status, outcome.stop_reason.as_str()),
        ("incomplete", "upstream_failed")
    );
    assert!((120_000..125_000).contains(&waited), "{waited} ms");
    assert!(events.contains(&"run_error".to_owned()), "{events:?}");
    let (status, content, _) = stored_message(&app, &spec.assistant_message_id).await;
    assert_eq!(status, "incomplete");
    assert!(content.to_string().contains("half an answer"), "{content}");
    // Cancelled while silent: at the next look, a second later.
    clear(&app, &spec.run_id).await;
    http.push(200, &[], hang.clone());
    let sink = SpySink {
        cancel_at: Some(3),
        ..Default::default()
    };
    let (outcome, waited, _) = run(sink, spec.clone()).await;
    assert_eq!(outcome.status, "cancelled");
    assert!(waited < 10_000, "{waited} ms");
    // The wall time ends while it is silent.
    clear(&app, &spec.run_id).await;
    http.push(200, &[], hang);
    let mut late = spec.clone();
    late.started_ms = app.ports.clock.now_ms() - 600_000 + 5_000;
    let (outcome, waited, _) = run(SpySink::default(), late).await;
    assert_eq!(
        (outcome.status, outcome.stop_reason.as_str()),
        ("incomplete", "time_limit")
    );
    assert!((5_000..10_000).contains(&waited), "{waited} ms");
}

/// A `retry-after` wait (the provider busy before the first token) is
/// cancelled like any other wait: the run ends without calling again.
#[tokio::test]
async fn a_cancel_during_a_retry_after_wait_ends_the_run() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    let before = http.requests.borrow().len();
    http.push(
        529,
        &[("retry-after", "30")],
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
    );
    http.push(200, &[], anthropic(&["late"], &[], "end_turn"));
    let sink = SpySink {
        cancel_at: Some(3),
        ..Default::default()
    };
    let started = app.ports.clock.now_ms();
    let outcome = everjust_core::chat::agent::run(&app.ports, &spec, &sink).await;
    assert_eq!(outcome.status, "cancelled");
    assert!(app.ports.clock.now_ms() - started < 30_000);
    assert_eq!(http.requests.borrow().len() - before, 1, "not called again");
    let events = sink.events.take();
    assert_eq!(events.last().map(String::as_str), Some("run_finished"));
    assert!(events.contains(&"step_finished".to_owned()), "{events:?}");
}

/// Anthropic can report an overload in the stream itself, right after
/// `message_start`. Before any content that is retried like a 529 answer,
/// and the user sees one clean answer; after content it ends the run as
/// incomplete, the text kept.
#[tokio::test]
async fn an_overload_in_the_stream_before_any_content_is_retried() {
    let (app, http, t, s) = setup(ANTHROPIC).await;
    let overloaded = format!(
        "{}{}",
        ev(
            "message_start",
            json!({"type":"message_start","message":{"id":"msg_o","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":100,"output_tokens":1}}}),
        ),
        ev(
            "error",
            json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
        )
    );
    http.push(200, &[], overloaded.clone());
    http.push(200, &[], anthropic(&["all ", "good"], &[], "end_turn"));
    let before = http.requests.borrow().len();
    let started = app.ports.clock.now_ms();
    let events = native(&send(&app, &t, &s, "hi", "native").await.body);
    assert_eq!(http.requests.borrow().len() - before, 2, "called again");
    assert!(app.ports.clock.now_ms() - started >= 2_000, "after a pause");
    assert_eq!(text_of(&events), "all good");
    assert!(
        !events.iter().any(|e| e["type"] == "run_error"),
        "{events:?}"
    );
    let end = events.last().expect("end");
    assert_eq!(
        (end["type"].as_str(), end["status"].as_str()),
        (Some("run_finished"), Some("complete"))
    );
    // Overloaded every time: after three retries the run ends in error.
    for _ in 0..4 {
        http.push(200, &[], overloaded.clone());
    }
    let events = native(&send(&app, &t, &s, "again", "native").await.body);
    let end = events.last().expect("end");
    assert_eq!(end["status"], "incomplete", "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "run_error"));
    // After some text: no retry, the text is kept.
    let full = anthropic(&["half "], &[], "end_turn");
    let cut = full.find("event: content_block_stop").expect("stop");
    http.push(
        200,
        &[],
        format!(
            "{}{}",
            &full[..cut],
            ev(
                "error",
                json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
            )
        ),
    );
    let before = http.requests.borrow().len();
    let events = native(&send(&app, &t, &s, "third", "native").await.body);
    assert_eq!(http.requests.borrow().len() - before, 1);
    assert_eq!(text_of(&events), "half ");
    assert_eq!(events.last().expect("end")["status"], "incomplete");
}

/// A run that fails midway on our side (its events cannot be stored) keeps
/// what its finished steps said and what their model calls cost.
#[tokio::test]
async fn a_run_that_fails_midway_keeps_its_finished_steps_and_their_usage() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    http.push(
        200,
        &[],
        anthropic(
            &["Writing it."],
            &[("c1", "write_file", json!({"path": "a.txt", "content": "A"}))],
            "tool_use",
        ),
    );
    http.push(200, &[], anthropic(&["Now the rest"], &[], "end_turn"));
    // The second step's start cannot be stored.
    let sink = SpySink {
        fail_on: Some(("step_started", 2)),
        ..Default::default()
    };
    let outcome = everjust_core::chat::agent::run(&app.ports, &spec, &sink).await;
    assert_eq!(outcome.status, "error");
    assert_eq!(outcome.usage.input_tokens, 100, "the first call's usage");
    let (status, content, input_tokens) = stored_message(&app, &spec.assistant_message_id).await;
    assert_eq!(status, "incomplete");
    assert_eq!(input_tokens, 100);
    let kinds: Vec<&str> = content
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["type"].as_str())
        .collect();
    assert_eq!(kinds, ["text", "tool_use", "tool_result"], "{content}");
    assert_eq!(content[0]["text"], "Writing it.");
}

/// The run's storage failing in the middle of a model stream still counts
/// what that call cost (its ledger row, the run's usage) and keeps the
/// text it had sent.
#[tokio::test]
async fn a_storage_failure_mid_stream_still_bills_that_call_and_keeps_its_text() {
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    http.push(
        200,
        &[],
        anthropic(&["Hello", " there", " and more"], &[], "end_turn"),
    );
    let sink = SpySink {
        fail_on: Some(("text_delta", 3)),
        ..Default::default()
    };
    let outcome = everjust_core::chat::agent::run(&app.ports, &spec, &sink).await;
    assert_eq!(outcome.status, "error");
    assert_eq!(outcome.usage.input_tokens, 100, "the call's usage");
    let billed = app
        .ports
        .sql
        .query(
            "SELECT input_tokens FROM usage_ledger WHERE run_id = $1",
            &[spec.run_id.as_str().into()],
        )
        .await
        .expect("read");
    assert_eq!(billed.len(), 1, "one ledger row for the one call");
    assert_eq!(billed[0].int("input_tokens").expect("tokens"), 100);
    let (status, content, input_tokens) = stored_message(&app, &spec.assistant_message_id).await;
    assert_eq!(status, "incomplete");
    assert_eq!(input_tokens, 100);
    // What its readers were sent: not the delta that could not be stored.
    assert_eq!(content, json!([{"type": "text", "text": "Hello there"}]));
    // The block's end cannot be stored: its whole text is kept.
    let spec = room_spec(&mut app, &t, &s).await;
    http.push(
        200,
        &[],
        anthropic(&["Hello", " there", " and more"], &[], "end_turn"),
    );
    let sink = SpySink {
        fail_on: Some(("text_end", 1)),
        ..Default::default()
    };
    let outcome = everjust_core::chat::agent::run(&app.ports, &spec, &sink).await;
    assert_eq!(outcome.status, "error");
    let (_, content, _) = stored_message(&app, &spec.assistant_message_id).await;
    assert_eq!(
        content,
        json!([{"type": "text", "text": "Hello there and more"}])
    );
}

/// A driver that was only slow, whose run a reader already ended as lost
/// (storing its partial answer), stops at its next look and stores no
/// second answer.
#[tokio::test]
async fn a_run_ended_as_lost_stops_its_slow_driver_without_a_second_answer() {
    use everjust_core::chat::agent::RunSink;
    let (mut app, http, t, s) = setup(ANTHROPIC).await;
    let spec = room_spec(&mut app, &t, &s).await;
    let sink = everjust_core::chat::inline::PgLogSink::new(app.ports.clone(), &spec, None);
    assert!(!sink.cancel_requested().await);
    app.ports
        .sql
        .execute(
            "UPDATE runs SET status = 'incomplete', error = 'driver_lost' WHERE id = $1",
            &[spec.run_id.as_str().into()],
        )
        .await
        .expect("ended by a reader");
    let sink = everjust_core::chat::inline::PgLogSink::new(app.ports.clone(), &spec, None);
    app.clock.advance_ms(1_000);
    assert!(sink.cancel_requested().await, "stops like a cancelled run");
    http.push(200, &[], anthropic(&["late"], &[], "end_turn"));
    let spy = SpySink::default();
    let outcome = everjust_core::chat::agent::run(&app.ports, &spec, &spy).await;
    // Its readers were told the run ended as the reader stored it: so is
    // the driver's own client.
    assert_eq!(
        (outcome.status, outcome.stop_reason.as_str()),
        ("incomplete", "driver_lost")
    );
    let ends = spy.ends.take();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["status"], "incomplete", "{}", ends[0]);
    assert_eq!(ends[0]["stop_reason"], "driver_lost", "{}", ends[0]);
    let answers = app
        .ports
        .sql
        .query(
            "SELECT id FROM messages WHERE run_id = $1 AND role = 'assistant'",
            &[spec.run_id.as_str().into()],
        )
        .await
        .expect("read");
    assert!(answers.is_empty(), "no answer from the slow driver");
    let status = app
        .ports
        .sql
        .query_opt(
            "SELECT status FROM runs WHERE id = $1",
            &[spec.run_id.as_str().into()],
        )
        .await
        .expect("read")
        .expect("run");
    assert_eq!(status.text("status").expect("status"), "incomplete");
}
