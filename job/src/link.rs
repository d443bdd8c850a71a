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
                    // zeromq drops what is still queued when a socket closes: let the last
                    // messages (the final frame, `end`) leave first.
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
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

/// What the job sends to whoever drives it (the kernel, a test).
#[derive(Debug)]
pub enum JobMessage {
    Hello(serde_json::Value),
    Frame(crate::wire::FrameHeader, Vec<u8>),
    Ack(serde_json::Value),
    End(serde_json::Value),
}

/// The driving side: a ROUTER on a loopback port that the job's rank 0 connects to. Jobs
/// may come and go (restart); commands go to the newest one that said hello.
pub struct JobEndpoint {
    endpoint: String,
    messages: mpsc::Receiver<JobMessage>,
    commands: UnboundedSender<Command>,
}

impl JobEndpoint {
    pub fn bind() -> Result<JobEndpoint, String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let (msg_tx, messages) = mpsc::channel();
        let (commands, mut cmd_rx) = unbounded_channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("job-endpoint".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut sock = zeromq::RouterSocket::new();
                    let endpoint = match sock.bind("tcp://127.0.0.1:0").await {
                        Ok(e) => e.to_string(),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot bind the job endpoint: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(endpoint));
                    let mut peer: Option<Bytes> = None;
                    loop {
                        tokio::select! {
                            c = cmd_rx.recv() => {
                                let Some(c) = c else { break };
                                let Some(id) = peer.clone() else { continue };
                                let frames = vec![id, Bytes::from(serde_json::to_vec(&c).expect("json"))];
                                let _ = sock.send(ZmqMessage::try_from(frames).expect("frames")).await;
                            }
                            z = sock.recv() => {
                                let Ok(z) = z else { break };
                                let frames = z.into_vec();
                                if frames.len() < 3 {
                                    continue;
                                }
                                let kind = String::from_utf8_lossy(&frames[1]).into_owned();
                                let json: serde_json::Value = serde_json::from_slice(&frames[2]).unwrap_or_default();
                                let m = match kind.as_str() {
                                    "hello" => {
                                        peer = Some(frames[0].clone());
                                        JobMessage::Hello(json)
                                    }
                                    "frame" => match serde_json::from_value(json) {
                                        Ok(h) => JobMessage::Frame(h, frames.get(3).map(|b| b.to_vec()).unwrap_or_default()),
                                        Err(_) => continue,
                                    },
                                    "ack" => JobMessage::Ack(json),
                                    "end" => JobMessage::End(json),
                                    _ => continue,
                                };
                                if msg_tx.send(m).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        let endpoint = ready_rx.recv().map_err(|_| "the job endpoint thread failed".to_string())??;
        Ok(JobEndpoint { endpoint, messages, commands })
    }

    /// `tcp://127.0.0.1:<port>`: what the job's `connect` names.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn recv_timeout(&self, wait: std::time::Duration) -> Option<JobMessage> {
        self.messages.recv_timeout(wait).ok()
    }

    pub fn try_recv(&self) -> Option<JobMessage> {
        self.messages.try_recv().ok()
    }

    pub fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
    }

    /// A handle that sends commands from another thread.
    pub fn commander(&self) -> UnboundedSender<Command> {
        self.commands.clone()
    }
}
