//! The live-captions page in a real browser: Debian's Chromium, headless,
//! driven through chromedriver (WebDriver). Chromium's fake capture device
//! plays recorded speech into the page's microphone; the page captures it
//! through its AudioWorklet, streams it over `/ws/stream`, and the test
//! waits for the spoken words as a final caption. A second test uploads a
//! file through the page's picker (REST). Screenshots are kept under the
//! test target directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::*;
use crate::server::*;
use crate::ws::HELLO;

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver must be installed (scripts/setup.sh installs chromium-driver)");
    Driver { child, port }
}

/// A headless Chromium whose microphone plays `audio` (a WAV), looping.
async fn browser(driver: &Driver, audio: &Path) -> Client {
    browser_with(driver, audio, &[]).await
}

/// [`browser`] with more Chromium flags.
async fn browser_with(driver: &Driver, audio: &Path, extra: &[&str]) -> Client {
    let mut args = vec![
        "--headless=new".to_string(),
        // Root in a container has no user namespace for the sandbox.
        "--no-sandbox".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-gpu".into(),
        "--window-size=1000,900".into(),
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", audio.display()),
        "--autoplay-policy=no-user-gesture-required".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": args,
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    let url = format!("http://127.0.0.1:{}", driver.port);
    // chromedriver takes a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot start Chromium through chromedriver: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until `css` has text for which `done` holds; returns it.
async fn wait_text(c: &Client, css: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut all = Vec::new();
        for e in c.find_all(Locator::Css(css)).await.unwrap_or_default() {
            all.push(e.text().await.unwrap_or_default());
        }
        last = all.join(" ");
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let error = match c.find(Locator::Id("error")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    panic!("{css} never matched within {within:?}; last text {last:?}; page error {error:?}");
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let path = dir.join(name);
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

/// hello.wav with silence around it, as Chromium's fake microphone plays it.
fn microphone_audio() -> PathBuf {
    let out = scratch().join("browser-mic.wav");
    let status = Command::new("sox")
        .arg(asset("audio/hello.wav"))
        .args(["-r", "48000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["pad", "0.5", "3"])
        .status()
        .expect("sox must be installed (scripts/setup.sh installs it)");
    assert!(status.success(), "sox failed");
    out
}

#[tokio::test]
async fn browser_page_shows_live_captions_of_the_microphone() {
    let server = TestServer::start(|_| {});
    let driver = chromedriver();
    let c = browser(&driver, &microphone_audio()).await;
    c.goto(&server.web_url()).await.expect("open the page");
    assert_eq!(c.title().await.expect("title"), "stt — live captions");
    c.find(Locator::Id("start"))
        .await
        .expect("#start")
        .click()
        .await
        .expect("click start");
    let captions = wait_text(
        &c,
        "#finals li.final span.text",
        Duration::from_secs(90),
        |t| word_recall(HELLO, t) >= 0.8,
    )
    .await;
    assert_words(HELLO, &captions, 0.8);
    // The final shows its times and language, and a latency was measured.
    let meta = wait_text(&c, "#finals li.final .meta", Duration::from_secs(5), |t| {
        t.contains("en")
    })
    .await;
    assert!(meta.contains('–'), "{meta}");
    let latency = c
        .find(Locator::Id("latency"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(latency.contains("ms"), "{latency}");
    screenshot(&c, "live-captions.png").await;
    c.find(Locator::Id("stop"))
        .await
        .unwrap()
        .click()
        .await
        .expect("click stop");
    wait_text(&c, "#status", Duration::from_secs(40), |t| t == "stopped").await;
    c.close().await.ok();
    let by = server.metrics.started_by_transport();
    assert!(by.get("websocket").copied().unwrap_or(0) >= 1, "{by:?}");
}

#[tokio::test]
async fn browser_page_over_https_streams_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::tls::ca(dir.path(), "ca");
    let (crt, key) = crate::tls::leaf(dir.path(), &ca, "server");
    let server = crate::tls::tls_server(&crt, &key, |_| {});
    let driver = chromedriver();
    // The test's own CA is not in Chromium's store; a deployment's
    // certificate would be.
    let c = browser_with(
        &driver,
        &microphone_audio(),
        &["--ignore-certificate-errors"],
    )
    .await;
    let url = format!("https://localhost:{}", server.web.unwrap().port());
    c.goto(&url).await.expect("open the page over https");
    c.find(Locator::Id("start"))
        .await
        .expect("#start")
        .click()
        .await
        .expect("click start");
    let captions = wait_text(
        &c,
        "#finals li.final span.text",
        Duration::from_secs(90),
        |t| word_recall(HELLO, t) >= 0.8,
    )
    .await;
    assert_words(HELLO, &captions, 0.8);
    c.close().await.ok();
    let by = server.metrics.started_by_transport();
    assert!(by.get("websocket").copied().unwrap_or(0) >= 1, "{by:?}");
}

#[tokio::test]
async fn browser_page_transcribes_a_picked_file() {
    let server = TestServer::start(|_| {});
    let driver = chromedriver();
    let c = browser(&driver, &microphone_audio()).await;
    c.goto(&server.web_url()).await.expect("open the page");
    let flac = scratch().join("picked.flac");
    let status = Command::new("sox")
        .arg(asset("audio/hello.wav"))
        .arg(&flac)
        .status()
        .expect("sox");
    assert!(status.success());
    let picker = c.find(Locator::Id("file")).await.expect("#file");
    picker
        .send_keys(&flac.display().to_string())
        .await
        .expect("pick the file");
    c.find(Locator::Id("upload"))
        .await
        .unwrap()
        .click()
        .await
        .expect("click upload");
    let result = wait_text(&c, "#file-result", Duration::from_secs(90), |t| {
        word_recall(HELLO, t) >= 0.8
    })
    .await;
    assert!(result.contains("english"), "{result}");
    screenshot(&c, "file-upload.png").await;
    c.close().await.ok();
    assert_eq!(server.metrics.started_by_transport().get("rest"), Some(&1));
}
