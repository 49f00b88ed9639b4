//! A hop's stderr, passed on to ferry's own and remembered (its last bytes), so that a failure
//! can be named in the hop's own words.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How much of the end of the stream is kept.
const KEEP: usize = 8192;

/// How long to wait for the stream's end once the process has exited (a grandchild may still
/// hold it open).
const LINGER: Duration = Duration::from_secs(2);

/// The kept end of a stderr stream, and the task passing it on. Clones share both.
#[derive(Clone)]
pub struct Tail {
    kept: Arc<Mutex<Vec<u8>>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Tail {
    /// Pass `stream` on to ferry's stderr as it comes, keeping its last bytes.
    pub fn pass_on<R: AsyncRead + Unpin + Send + 'static>(mut stream: R) -> Tail {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keep = kept.clone();
        let task = tokio::spawn(async move {
            let mut ours = tokio::io::stderr();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    k.extend_from_slice(&buf[..n]);
                    let excess = k.len().saturating_sub(KEEP);
                    k.drain(..excess);
                }
                let _ = ours.write_all(&buf[..n]).await;
                let _ = ours.flush().await;
            }
        });
        Tail {
            kept,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Wait (a bounded time) until everything has been passed on.
    pub async fn finish(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(LINGER, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// What was kept, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
