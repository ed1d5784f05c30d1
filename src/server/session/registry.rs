//! Sessions between `CreateSession` and the end of their stream. Admission
//! rejects rather than queues: a semaphore sized to `server.max_sessions`
//! hands each registered session a permit that lives in its entry, so
//! removing the entry (stream end, error, or a created session that never
//! streams within `session_timeout_sec`) frees the slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::options::SessionOptions;
use crate::error::{ErrorCode, SttError};
use crate::server::model_registry::ModelLease;

/// Cheap-to-clone handle to the session table.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Short critical sections only; never held across an await.
    sessions: Mutex<HashMap<String, Entry>>,
    /// One permit per registered session; `try_acquire` → ERR1008 when none.
    admission: Arc<Semaphore>,
    max_sessions: usize,
}

struct Entry {
    options: Arc<SessionOptions>,
    token: Option<String>,
    /// The model the session decodes with, held from CreateSession on so
    /// an unload waits for it. `None` only in unit tests.
    model: Option<Arc<ModelLease>>,
    streaming: bool,
    created: Instant,
    _permit: OwnedSemaphorePermit,
}

/// A session whose stream is running. Dropping it unregisters the session.
pub struct Claim {
    registry: Registry,
    pub options: Arc<SessionOptions>,
    pub token: Option<String>,
    pub model: Option<Arc<ModelLease>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.options.id);
    }
}

impl Registry {
    pub fn new(max_sessions: usize) -> Self {
        let max_sessions = max_sessions.max(1);
        Self {
            inner: Arc::new(Inner {
                sessions: Mutex::new(HashMap::new()),
                admission: Arc::new(Semaphore::new(max_sessions)),
                max_sessions,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session that will decode with `model`; returns its
    /// token when one was asked for.
    pub fn create(
        &self,
        options: SessionOptions,
        model: Option<ModelLease>,
    ) -> Result<Option<String>, SttError> {
        self.create_limited(options, model, None, None)
    }

    /// [`Registry::create`], also refusing (ERR1008) when the session's API
    /// key already holds `per_key` sessions — checked under the same lock
    /// as admission, so two racing sessions cannot both slip in.
    pub fn create_limited(
        &self,
        options: SessionOptions,
        model: Option<ModelLease>,
        per_key: Option<usize>,
        per_ip: Option<usize>,
    ) -> Result<Option<String>, SttError> {
        let mut sessions = self.lock();
        if sessions.contains_key(&options.id) {
            return Err(SttError::new(
                ErrorCode::Err1002,
                format!("session_id {:?} is already active", options.id),
            ));
        }
        if let (Some(max), Some(ip)) = (per_ip, options.peer) {
            let held = sessions
                .values()
                .filter(|e| e.options.peer == Some(ip))
                .count();
            if held >= max {
                return Err(SttError::new(
                    ErrorCode::Err1008,
                    format!("{ip} already holds its {max} sessions (server.max_sessions_per_ip); end one or retry later"),
                ));
            }
        }
        if let (Some(max), Some(key)) = (per_key, &options.api_key) {
            let held = sessions
                .values()
                .filter(|e| e.options.api_key.as_ref() == Some(key))
                .count();
            if held >= max {
                return Err(SttError::new(
                    ErrorCode::Err1008,
                    format!("API key {key} already holds its {max} sessions (its max_sessions); end one or retry later"),
                ));
            }
        }
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                SttError::new(
                    ErrorCode::Err1008,
                    format!(
                        "server is at capacity ({} sessions, server.max_sessions); retry later",
                        self.inner.max_sessions
                    ),
                )
            })?;
        let token = if options.token_required {
            Some(new_token()?)
        } else {
            None
        };
        sessions.insert(
            options.id.clone(),
            Entry {
                options: Arc::new(options),
                token: token.clone(),
                model: model.map(Arc::new),
                streaming: false,
                created: Instant::now(),
                _permit: permit,
            },
        );
        Ok(token)
    }

    /// Starts the stream of a registered session.
    pub fn claim(&self, id: &str) -> Result<Claim, SttError> {
        let mut sessions = self.lock();
        let entry = sessions.get_mut(id).ok_or_else(|| {
            SttError::new(
                ErrorCode::Err1004,
                format!("unknown session_id {id:?}: call CreateSession first"),
            )
        })?;
        if entry.streaming {
            return Err(SttError::new(
                ErrorCode::Err1002,
                format!("session_id {id:?} already has a stream"),
            ));
        }
        entry.streaming = true;
        Ok(Claim {
            registry: self.clone(),
            options: entry.options.clone(),
            token: entry.token.clone(),
            model: entry.model.clone(),
        })
    }

    /// Whether `id` is created and waiting for its stream.
    pub fn is_waiting(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| !e.streaming)
    }

    /// Drops sessions that were created but never streamed within `idle`.
    pub fn reap(&self, idle: Duration) -> usize {
        let mut sessions = self.lock();
        let before = sessions.len();
        sessions.retain(|_, e| e.streaming || e.created.elapsed() < idle);
        before - sessions.len()
    }

    /// Registered sessions (created or streaming).
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// Registered sessions per API key.
    pub fn by_api_key(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for e in self.lock().values() {
            if let Some(k) = &e.options.api_key {
                *out.entry(k.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// 128 random bits from the OS, as hex.
fn new_token() -> Result<String, SttError> {
    if crate::fault::armed(crate::fault::Fault::SessionToken) {
        return Err(
            SttError::new(ErrorCode::Err3001, "cannot issue a session token")
                .with_source(std::io::Error::other(crate::fault::INJECTED)),
        );
    }
    crate::server::secret::random_hex(16).map_err(|e| {
        SttError::new(ErrorCode::Err3001, "cannot issue a session token").with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Task;
    use crate::server::session::options::{Profile, VadMode};

    fn opts(id: &str, token: bool) -> SessionOptions {
        SessionOptions {
            id: id.into(),
            attributes: Default::default(),
            vad_mode: VadMode::Continue,
            vad_silence: 0.5,
            vad_threshold: 0.5,
            language: None,
            candidates: None,
            task: Task::Transcribe,
            profile: Profile::Realtime,
            token_required: token,
            api_key: None,
            peer: None,
            word_timestamps: false,
            prompt: None,
            audio_seconds_per_minute: None,
        }
    }

    #[test]
    fn admission_duplicates_and_release() {
        let r = Registry::new(2);
        assert!(r.create(opts("a", false), None).unwrap().is_none());
        assert_eq!(
            r.create(opts("a", false), None).unwrap_err().code,
            ErrorCode::Err1002
        );
        r.create(opts("b", false), None).unwrap();
        assert_eq!(
            r.create(opts("c", false), None).unwrap_err().code,
            ErrorCode::Err1008
        );
        let claim = r.claim("a").unwrap();
        assert_eq!(r.claim("a").err().map(|e| e.code), Some(ErrorCode::Err1002));
        drop(claim);
        assert_eq!(r.active(), 1);
        r.create(opts("c", false), None).unwrap();
        assert_eq!(
            r.claim("zzz").err().map(|e| e.code),
            Some(ErrorCode::Err1004)
        );
    }

    #[test]
    fn tokens_are_issued_and_compared() {
        let r = Registry::new(4);
        let t = r.create(opts("a", true), None).unwrap().expect("token");
        assert_eq!(t.len(), 32);
        let u = r.create(opts("b", true), None).unwrap().expect("token");
        assert_ne!(t, u);
    }

    #[test]
    fn reaping_frees_unclaimed_sessions_only() {
        let r = Registry::new(4);
        r.create(opts("idle", false), None).unwrap();
        r.create(opts("live", false), None).unwrap();
        let _live = r.claim("live").unwrap();
        assert_eq!(r.reap(Duration::ZERO), 1);
        assert_eq!(r.active(), 1);
    }
}
