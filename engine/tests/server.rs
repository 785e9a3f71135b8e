//! `kiln serve` under load and faults, through a real process and HTTP:
//! a client that disconnects has its request aborted and its KV blocks
//! freed; a full waiting queue answers 503 with `Retry-After`; SIGTERM
//! refuses new requests, lets short ones finish and aborts the rest, then
//! exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--port", "0", "--kv-cache-memory", "256MiB"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metric(client: &reqwest::Client, s: &Server, name: &str) -> f64 {
    let text = client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !check().await {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn long_request(stream: bool) -> Value {
    json!({
        "prompt": "Write a very long story about a lighthouse keeper.",
        "max_tokens": 2000,
        "ignore_eos": true,
        "temperature": 0,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_frees_its_blocks_at_once() {
    let s = Server::start(&[]);
    let client = reqwest::Client::new();
    let resp = client
        .post(s.url("/v1/completions"))
        .json(&long_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        let chunk = body.next().await.expect("stream continues").unwrap();
        seen += String::from_utf8_lossy(&chunk).matches("data: ").count();
    }
    assert!(metric(&client, &s, "kiln_kv_cache_usage_perc").await > 0.0);
    drop(body);
    wait_for("the aborted request to free its blocks", async || {
        metric(&client, &s, "kiln_num_requests_running").await == 0.0
            && metric(&client, &s, "kiln_kv_cache_usage_perc").await == 0.0
    })
    .await;
    assert_eq!(
        metric(&client, &s, "kiln_requests_aborted_disconnect_total").await,
        1.0,
        "{}",
        s.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_waiting_queue_answers_503_with_retry_after() {
    let s = Server::start(&["--max-num-seqs", "1", "--max-waiting", "1"]);
    let client = reqwest::Client::new();
    // A runs; B waits; C finds the queue full.
    let a = client
        .post(s.url("/v1/completions"))
        .json(&long_request(true))
        .send()
        .await
        .unwrap();
    let mut a_body = a.bytes_stream();
    let _ = a_body.next().await;
    let b_client = client.clone();
    let b_url = s.url("/v1/completions");
    let b =
        tokio::spawn(async move { b_client.post(b_url).json(&long_request(false)).send().await });
    wait_for("one waiting request", async || {
        metric(&client, &s, "kiln_num_requests_waiting").await == 1.0
    })
    .await;
    let c = client
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "Hello", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 503);
    let retry: u64 = c
        .headers()
        .get("retry-after")
        .expect("Retry-After is set")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let err: Value = c.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    assert_eq!(err["error"]["code"], 503);
    b.abort();
    drop(a_body);
    wait_for("everything to be aborted", async || {
        metric(&client, &s, "kiln_kv_cache_usage_perc").await == 0.0
    })
    .await;
}

/// Read an SSE stream to its end; returns the finish reasons seen and
/// whether it ended with `[DONE]`.
async fn read_stream(resp: reqwest::Response) -> (Vec<String>, bool) {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => break,
        }
    }
    let mut reasons = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        for c in v["choices"].as_array().into_iter().flatten() {
            if let Some(r) = c["finish_reason"].as_str() {
                reasons.push(r.to_string());
            }
        }
    }
    (reasons, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_aborts_then_exits_zero() {
    let mut s = Server::start(&["--shutdown-timeout", "3"]);
    let client = reqwest::Client::new();
    let short = client
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    let long = client
        .post(s.url("/v1/completions"))
        .json(&long_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (short.status().as_u16(), long.status().as_u16()),
        (200, 200)
    );
    let short_task = tokio::spawn(read_stream(short));
    let long_task = tokio::spawn(read_stream(long));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = s.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // New requests are refused while draining.
    let mut refused = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(r) = client
            .post(s.url("/v1/completions"))
            .json(&json!({"prompt": "Hi", "max_tokens": 2}))
            .send()
            .await
        {
            if r.status() == 503 {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "new requests get 503 while draining\n{}", s.log());

    let (short_reasons, short_done) = short_task.await.unwrap();
    assert_eq!(short_reasons, vec!["length"]);
    assert!(short_done);
    let (long_reasons, long_done) = long_task.await.unwrap();
    assert_eq!(long_reasons, vec!["abort"], "{}", s.log());
    assert!(long_done);

    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the server exits after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}\n{}", s.log());
}
