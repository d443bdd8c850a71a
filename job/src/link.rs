//! The job's link to the kernel: one ZeroMQ DEALER socket that rank 0 connects to the
//! kernel's ROUTER. Frames and status go out, commands come in; a thread with its own small
//! runtime owns the socket so that the MPI loop never blocks on the network.
//!
//! Out: multipart `[kind, header JSON, body?]` with kind `hello`, `frame` (body: Arrow IPC
//! stream), `ack` (a command's outcome), `error`, `end`. In: one frame, a [`Command`] as JSON.

use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::wire::Command;

pub struct Link {
    out: UnboundedSender<Vec<Bytes>>,
    commands: mpsc::Receiver<Result<Command, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Connects to the kernel's endpoint (e.g. `tcp://127.0.0.1:5555`).
    pub fn connect(endpoint: &str) -> Result<Link, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let (out, mut out_rx) = unbounded_channel::<Vec<Bytes>>();
        let (cmd_tx, commands) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let endpoint = endpoint.to_string();
        let thread = std::thread::Builder::new()
            .name("kernel-link".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut sock = DealerSocket::new();
                    if let Err(e) = sock.connect(&endpoint).await {
                        let _ = ready_tx.send(Err(format!("cannot connect to the kernel at {endpoint}: {e}")));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        tokio::select! {
                            m = out_rx.recv() => {
                                let Some(frames) = m else { break };
                                let Ok(z) = ZmqMessage::try_from(frames) else { continue };
                                if sock.send(z).await.is_err() {
                                    break;
                                }
                            }
                            z = sock.recv() => {
                                let Ok(z) = z else { break };
                                let first = z.get(z.len() - 1).cloned().unwrap_or_default();
                                let cmd = serde_json::from_slice::<Command>(&first).map_err(|e| format!("bad command from the kernel: {e}"));
                                if cmd_tx.send(cmd).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    // Give queued messages a moment to leave before the socket closes.
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), sock.close()).await;
                });
            })
            .map_err(|e| e.to_string())?;
        ready_rx.recv().map_err(|_| "the kernel link thread failed".to_string())??;
        Ok(Link { out, commands, thread: Some(thread) })
    }

    pub fn send(&self, kind: &str, header: &impl serde::Serialize, body: Option<Vec<u8>>) {
        let mut frames = vec![Bytes::from(kind.to_string()), Bytes::from(serde_json::to_vec(header).expect("json"))];
        if let Some(b) = body {
            frames.push(Bytes::from(b));
        }
        let _ = self.out.send(frames);
    }

    /// Commands received since the last call.
    pub fn commands(&self) -> Vec<Result<Command, String>> {
        self.commands.try_iter().collect()
    }

    /// Sends what is queued, then closes.
    pub fn close(mut self) {
        let (tx, _) = unbounded_channel();
        drop(std::mem::replace(&mut self.out, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
