//! [`MeshTls`]: one service's TLS material, reloaded from disk while the
//! service runs.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::{ClientConfig, ServerConfig};
use tokio::task::JoinHandle;

use crate::material::{FileContents, Material};
use crate::{Error, PeerIdentity, Result, TlsFiles};

/// The shortest polling interval [`MeshTls::spawn_reload`] accepts.
const RELOAD_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// One service's mutual-TLS material: its own certificate and key, the CA
/// bundle it trusts, and the rustls configurations built from them.
///
/// Cheap to clone; clones share the material. Every new handshake, served
/// or dialled, uses the material current at that moment; a reload swaps in
/// a whole new generation, so connections already open keep the one they
/// started with.
#[derive(Clone)]
pub struct MeshTls {
    shared: Arc<Shared>,
}

struct Shared {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Material>>,
    /// What the poller last tried to load, good or bad, so it neither
    /// rebuilds unchanged files nor logs the same refusal every tick.
    last_attempt: Mutex<Option<Attempt>>,
}

#[derive(PartialEq, Eq)]
enum Attempt {
    Read(FileContents),
    Unreadable(String),
}

/// What [`MeshTls::reload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub identity: PeerIdentity,
    /// The new leaf certificate's serial number, lowercase hex.
    pub serial_hex: String,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("files", &self.shared.files)
            .field("identity", &self.identity().to_string())
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Loads and checks the files (see [`TlsFiles`]); fails with the file
    /// and the reason if they are unusable.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = FileContents::read(&files)?;
        let material = Material::build(&files, &contents, &provider, UnixTime::now())?;
        tracing::info!(
            identity = %material.identity,
            serial = %material.serial_hex,
            cert = %files.cert.display(),
            "tls certificates loaded"
        );
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                provider,
                current: RwLock::new(Arc::new(material)),
                last_attempt: Mutex::new(Some(Attempt::Read(contents))),
            }),
        })
    }

    /// This service's own identity, from its current certificate.
    pub fn identity(&self) -> PeerIdentity {
        self.current().identity.clone()
    }

    /// The serial number of the certificate new handshakes present, hex.
    pub fn serial_hex(&self) -> String {
        self.current().serial_hex.clone()
    }

    pub fn files(&self) -> &TlsFiles {
        &self.shared.files
    }

    /// The rustls server configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server_config.clone()
    }

    /// The rustls client configuration for the next connection to a server
    /// that must be `expected`.
    pub fn client_config(&self, expected: &PeerIdentity) -> Result<Arc<ClientConfig>> {
        self.current()
            .client_config(expected, &self.shared.provider)
    }

    /// Reads the files again and, if they are good, makes them the material
    /// of every new handshake. If they are not, the current material stays
    /// in use, the refusal is logged, and the error says why.
    ///
    /// Reads files and signs nothing; cheap, but blocking: from async code
    /// call it through `spawn_blocking`, or use [`MeshTls::spawn_reload`].
    pub fn reload(&self) -> Result<Reloaded> {
        let contents =
            FileContents::read(&self.shared.files).inspect_err(|e| self.log_refusal(e))?;
        self.apply(contents)
    }

    /// Polls the files every `interval` and reloads when their contents
    /// change. Polling (rather than file notifications) works the same on
    /// every filesystem, including Kubernetes secret volumes, whose files
    /// change by a symlink swap. Stops when the returned task is dropped.
    /// Intervals under 10 ms are raised to 10 ms.
    ///
    /// Must be called from within a tokio runtime.
    pub fn spawn_reload(&self, interval: Duration) -> ReloadTask {
        let interval = interval.max(RELOAD_INTERVAL_MIN);
        let tls = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the files were just loaded.
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let poll = tls.clone();
                if let Err(error) = tokio::task::spawn_blocking(move || poll.poll_once()).await {
                    tracing::warn!(%error, "tls reload poll failed");
                }
            }
        });
        ReloadTask(task)
    }

    /// One poll: reload if the files differ from the last attempt.
    fn poll_once(&self) {
        let attempt = match FileContents::read(&self.shared.files) {
            Ok(contents) => Attempt::Read(contents),
            Err(error) => Attempt::Unreadable(error.to_string()),
        };
        let mut last = self
            .shared
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_ref() == Some(&attempt) {
            return;
        }
        match attempt {
            Attempt::Read(contents) => {
                drop(last);
                // `apply` logs the outcome and records the attempt.
                let _ = self.apply(contents);
            }
            Attempt::Unreadable(reason) => {
                tracing::warn!(
                    cert = %self.shared.files.cert.display(),
                    reason = %reason,
                    "refusing new tls files; the current certificates stay in use"
                );
                *last = Some(Attempt::Unreadable(reason));
            }
        }
    }

    fn apply(&self, contents: FileContents) -> Result<Reloaded> {
        let result = Material::build(
            &self.shared.files,
            &contents,
            &self.shared.provider,
            UnixTime::now(),
        )
        .and_then(|material| {
            let current = self.current();
            if material.identity != current.identity {
                return Err(Error::IdentityChanged {
                    cert: self.shared.files.cert.clone(),
                    from: current.identity.to_string(),
                    to: material.identity.to_string(),
                });
            }
            Ok(material)
        });
        *self
            .shared
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Attempt::Read(contents));
        let material = result.inspect_err(|e| self.log_refusal(e))?;
        let reloaded = Reloaded {
            identity: material.identity.clone(),
            serial_hex: material.serial_hex.clone(),
        };
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(material);
        tracing::info!(
            identity = %reloaded.identity,
            serial = %reloaded.serial_hex,
            cert = %self.shared.files.cert.display(),
            "tls certificates reloaded; new handshakes use them"
        );
        Ok(reloaded)
    }

    fn log_refusal(&self, error: &Error) {
        tracing::warn!(
            cert = %self.shared.files.cert.display(),
            reason = %error,
            "refusing new tls files; the current certificates stay in use"
        );
    }

    fn current(&self) -> Arc<Material> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The background reload of [`MeshTls::spawn_reload`]; dropping it stops
/// the polling.
#[derive(Debug)]
pub struct ReloadTask(JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
