//! The live-captions page, embedded in the binary: no build step, no CDN,
//! it works offline. `/` serves the page; its script, stylesheet and audio
//! worklet sit beside it.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const WORKLET: &str = include_str!("assets/capture-worklet.js");
const STYLE: &str = include_str!("assets/style.css");

/// Browsers refuse ES modules (the app and the worklet) served with any
/// other type.
const JS: &str = "text/javascript; charset=utf-8";

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

pub async fn app() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, JS)], APP)
}

pub async fn worklet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, JS)], WORKLET)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
