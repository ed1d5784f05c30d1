//! Density under overload: one decode thread and more streams than it can
//! keep partials for. Every utterance must still get its final, the
//! partial cadence must widen, and the metrics must say so.

use std::time::Duration;

use crate::harness::*;
use crate::server::*;
use crate::streaming::{silence, speech};

const TEXTS: [(&str, &str); 8] = [
    (
        "Please call me back tomorrow afternoon.",
        "The project deadline is next Friday.",
    ),
    (
        "I would like to order a large pizza.",
        "We need more coffee in the kitchen.",
    ),
    (
        "Good morning everyone, let us begin the meeting.",
        "Thank you for calling customer support.",
    ),
    (
        "Thank you for calling customer support.",
        "Please call me back tomorrow afternoon.",
    ),
    (
        "The project deadline is next Friday.",
        "I would like to order a large pizza.",
    ),
    (
        "We need more coffee in the kitchen.",
        "Good morning everyone, let us begin the meeting.",
    ),
    (
        "Please call me back tomorrow afternoon.",
        "We need more coffee in the kitchen.",
    ),
    (
        "I would like to order a large pizza.",
        "The project deadline is next Friday.",
    ),
];

async fn metrics_json(server: &TestServer) -> serde_json::Value {
    crate::http::get_json(&format!("http://{}/metrics.json", server.http))
        .await
        .1
}

#[tokio::test]
async fn overloaded_server_widens_partial_cadence_and_still_finals_every_utterance() {
    let server = TestServer::start(|s| {
        s.server.server.max_sessions = 8;
        s.model.model.threads = 1;
    });
    let mut tasks = Vec::new();
    for (i, (a, b)) in TEXTS.iter().enumerate() {
        let id = format!("dense-{i}");
        let mut audio = speech(&format!("dense_{i}_a"), a);
        audio.extend(silence(1.0));
        audio.extend(speech(&format!("dense_{i}_b"), b));
        audio.extend(silence(1.0));
        create_ok(&server, session_request(&id)).await;
        let mut client = server.client().await;
        // Twice real time: eight streams on one thread is far past what
        // it can give partials to.
        tasks.push(tokio::spawn(async move {
            let chunks = audio_chunks(&audio, 100, &id, "");
            stream_raw(&mut client, &id, "", chunks, Duration::from_millis(50)).await
        }));
    }
    for (task, (a, b)) in tasks.into_iter().zip(TEXTS) {
        let out = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("stream ends")
            .expect("task");
        assert!(out.status.is_none(), "{:?}", out.status);
        // Both utterances reach the client as final text.
        assert_words(&format!("{a} {b}"), &out.final_text(), 0.75);
    }

    let body = metrics_json(&server).await;
    let cadence = &body["decode"]["partial_cadence"];
    assert!(
        cadence["widenings_total"].as_u64().unwrap_or(0) >= 1,
        "the cadence never widened: {body}"
    );
    let e2f = &body["latency"]["end_of_utterance_to_final"];
    assert!(e2f["count"].as_u64().unwrap_or(0) >= 16, "{body}");
    assert!(e2f["p95_sec"].as_f64().unwrap_or(0.0) > 0.0, "{body}");

    let scrape = crate::http::scrape(&server).await;
    let widenings = crate::http::sample(&scrape, "stt_partial_cadence_widenings_total", &[]);
    assert!(widenings.unwrap_or(0.0) >= 1.0, "{widenings:?}");
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "stt_stream_latency_seconds"
                && s.labels.get("measure") == Some("end_of_utterance_to_final")
        })
        .map(|s| &s.value);
    match histogram {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let count = buckets.last().map_or(0.0, |b| b.count);
            assert!(count >= 16.0, "{count} finals in the histogram");
        }
        other => panic!("stt_stream_latency_seconds is not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn a_final_that_finds_no_slot_within_the_queue_timeout_is_err2001() {
    // One decode slot server-wide and a 10 ms wait for it: four streams
    // ending the same utterance together cannot all get one.
    let server = TestServer::start(|s| {
        s.server.server.max_sessions = 4;
        s.server.server.max_pending_decodes_global = 1;
        s.server.server.decode_queue_timeout_sec = 0.01;
        s.model.model.threads = 1;
    });
    let mut audio = speech("dense_slot", TEXTS[0].0);
    audio.extend(silence(1.0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let id = format!("slot-{i}");
        create_ok(&server, session_request(&id)).await;
        let mut client = server.client().await;
        let audio = audio.clone();
        tasks.push(tokio::spawn(async move {
            let chunks = audio_chunks(&audio, 100, &id, "");
            stream_raw(&mut client, &id, "", chunks, Duration::ZERO).await
        }));
    }
    let mut timed_out: u64 = 0;
    for task in tasks {
        let out = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("stream ends")
            .expect("task");
        if let Some(status) = &out.status {
            assert_eq!(out.code().as_deref(), Some("ERR2001"), "{status:?}");
            assert!(status.message().contains("no decode slot"), "{status:?}");
            timed_out += 1;
        }
    }
    assert!(timed_out >= 1, "every final found a slot in 10 ms");
    let body = metrics_json(&server).await;
    let counted = body["decode"]["finals_queue_timeouts_total"].as_u64();
    assert_eq!(counted, Some(timed_out), "{body}");
}

#[tokio::test]
async fn partials_past_the_global_decode_bound_are_dropped_and_counted_finals_wait() {
    // One decode in flight server-wide; finals may wait as long as they
    // must. Three streams ask for a partial every 0.3 s of audio.
    let server = TestServer::start(|s| {
        s.server.server.max_pending_decodes_global = 1;
        s.server.server.decode_queue_timeout_sec = 60.0;
        s.server.server.partial_decode_interval_sec = 0.3;
        s.model.model.threads = 1;
    });
    let mut tasks = Vec::new();
    for (i, (a, _)) in TEXTS.iter().take(3).enumerate() {
        let id = format!("bound-{i}");
        let mut audio = speech(&format!("dense_bound_{i}"), a);
        audio.extend(silence(1.0));
        create_ok(&server, session_request(&id)).await;
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let chunks = audio_chunks(&audio, 100, &id, "");
            stream_raw(&mut client, &id, "", chunks, Duration::from_millis(100)).await
        }));
    }
    for (task, (a, _)) in tasks.into_iter().zip(TEXTS) {
        let out = tokio::time::timeout(Duration::from_secs(180), task)
            .await
            .expect("stream ends")
            .expect("task");
        assert!(out.status.is_none(), "{:?}", out.status);
        assert_words(a, &out.final_text(), 0.75);
    }
    let body = metrics_json(&server).await;
    let dropped = body["decode"]["partials_dropped_total"].as_u64();
    assert!(
        dropped.is_some_and(|n| n >= 1),
        "no partial dropped: {body}"
    );
    assert_eq!(
        body["decode"]["finals_queue_timeouts_total"].as_u64(),
        Some(0),
        "{body}"
    );
}
