//! The job's end: one ZeroMQ DEALER socket that rank 0 connects to the driver's ROUTER.
//! Messages go out, commands come in; a thread with its own small runtime owns the socket so
//! that the job's loop never blocks on the network.

use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::messages::{decode_command, encode_outgoing, Outgoing};
use crate::{Command, ContractError};

pub struct Link {
    out: UnboundedSender<Vec<Bytes>>,
    commands: mpsc::Receiver<Result<Command, ContractError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Connects to the driver's endpoint (e.g. `tcp://127.0.0.1:5555`).
    pub fn connect(endpoint: &str) -> Result<Link, ContractError> {
        let failed = |e: &dyn std::fmt::Display| ContractError::Link(format!("cannot connect to the kernel at {endpoint}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(&e))?;
        let (out, mut out_rx) = unbounded_channel::<Vec<Bytes>>();
        let (cmd_tx, commands) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let target = endpoint.to_string();
        let thread = std::thread::Builder::new()
            .name("kernel-link".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut sock = DealerSocket::new();
                    if let Err(e) = sock.connect(&target).await {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        tokio::select! {
                            m = out_rx.recv() => {
                                let Some(parts) = m else { break };
                                let Ok(z) = ZmqMessage::try_from(parts) else { continue };
                                if sock.send(z).await.is_err() {
                                    break;
                                }
                            }
                            z = sock.recv() => {
                                let Ok(z) = z else { break };
                                let last = z.get(z.len() - 1).cloned().unwrap_or_default();
                                if cmd_tx.send(decode_command(&last)).is_err() {
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
            .map_err(|e| failed(&e))?;
        let ready = ready_rx.recv().map_err(|_| failed(&"the link thread ended"))?;
        ready.map_err(|e| failed(&e))?;
        Ok(Link { out, commands, thread: Some(thread) })
    }

    pub fn send<M: Outgoing>(&self, message: &M, body: Option<Vec<u8>>) {
        let _ = self.out.send(encode_outgoing(message, body));
    }

    /// Commands received since the last call (a command that cannot be read is an error).
    pub fn commands(&self) -> Vec<Result<Command, ContractError>> {
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
