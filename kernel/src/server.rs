//! The kernel's sockets and tasks (spec §2–§5): one task per socket, iopub fed by a queue so
//! that nothing reorders it, cells executed one at a time on their own thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jupyter_protocol::ConnectionInfo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use zeromq::{RepSocket, RouterSocket, Socket, SocketRecv, SocketSend, XPubSocket};

use crate::cell::CellRequest;
use crate::executor::Executor;
use crate::publisher::{InputRequest, Publisher};
use crate::requests::Requests;
use crate::transport::{Message, Signer};
use crate::widgets::Widgets;

async fn bind<S: Socket>(mut s: S, url: &str) -> Result<S, String> {
    s.bind(url).await.map_err(|e| format!("cannot bind {url}: {e}"))?;
    Ok(s)
}

/// Runs the kernel until a shutdown request.
pub async fn serve(info: ConnectionInfo) -> Result<(), String> {
    let signer = Signer::new(&info);
    let session = uuid::Uuid::new_v4().to_string();
    let (publisher, queues) = Publisher::new(&session);
    let widgets = Arc::new(Widgets::new(publisher.clone()));
    // Set by interrupt_request (and SIGINT); long operations poll it.
    let interrupt = Arc::new(AtomicBool::new(false));
    let shutdown = Arc::new(Notify::new());

    let iopub = bind(XPubSocket::new(), &info.iopub_url()).await?;
    let shell = bind(RouterSocket::new(), &info.shell_url()).await?;
    let control = bind(RouterSocket::new(), &info.control_url()).await?;
    let stdin = bind(RouterSocket::new(), &info.stdin_url()).await?;
    let hb = bind(RepSocket::new(), &info.hb_url()).await?;

    let (exec_tx, exec_rx) = std::sync::mpsc::channel::<CellRequest>();
    let requests = Arc::new(Requests::new(publisher.clone(), widgets.clone()));
    {
        let executor = Executor::new(publisher.clone(), interrupt.clone(), widgets.clone(), requests.clone());
        std::thread::Builder::new()
            .name("beamtime-cells".into())
            .spawn(move || executor.run(exec_rx))
            .map_err(|e| format!("cannot start the cell thread: {e}"))?;
    }

    tokio::spawn(iopub_task(iopub, queues.iopub, signer.clone(), session.clone()));
    tokio::spawn(heartbeat_task(hb));
    tokio::spawn(stdin_task(stdin, queues.stdin, signer.clone()));
    tokio::spawn(shell_task(shell, queues.shell, signer.clone(), requests.clone(), exec_tx));
    tokio::spawn(control_task(control, signer, requests.clone(), publisher, interrupt.clone(), shutdown.clone()));
    tokio::spawn(async move {
        // interrupt_mode is "message", but a SIGINT (terminal Ctrl-C) interrupts too.
        if let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            while sig.recv().await.is_some() {
                interrupt.store(true, Ordering::SeqCst);
            }
        }
    });
    shutdown.notified().await;
    // Let the queued shutdown reply and idle status leave the sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Stop evcxr's runtime process and any build, and remove evcxr's build directory.
    tokio::task::block_in_place(|| requests.rust.shutdown());
    Ok(())
}

/// Owns iopub (XPUB): publishes the queue in order, and welcomes each new subscriber (5.5).
async fn iopub_task(mut sock: XPubSocket, mut rx: mpsc::UnboundedReceiver<Message>, signer: Signer, session: String) {
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(mut m) = m else { break };
                m.identities = vec![bytes::Bytes::from(format!("kernel.{session}.{}", m.header.msg_type))];
                if let Err(e) = sock.send(signer.encode(&m)).await {
                    eprintln!("beamtime kernel: iopub send failed: {e}");
                }
            }
            sub = sock.recv() => {
                let Ok(sub) = sub else { continue };
                if let Some(frame) = sub.get(0) {
                    if frame.first() == Some(&1) {
                        let topic = String::from_utf8_lossy(&frame[1..]).into_owned();
                        let mut m = Message::new(&session, "iopub_welcome", json!({"subscription": topic}));
                        m.identities = vec![bytes::Bytes::from(format!("kernel.{session}.iopub_welcome"))];
                        let _ = sock.send(signer.encode(&m)).await;
                    }
                }
            }
        }
    }
}

async fn heartbeat_task(mut sock: RepSocket) {
    while let Ok(m) = sock.recv().await {
        if sock.send(m).await.is_err() {
            break;
        }
    }
}

/// Receives a message and checks its signature; bad ones are logged and dropped.
fn accept(signer: &Signer, channel: &str, z: zeromq::ZmqMessage) -> Option<Message> {
    match signer.decode(z) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("beamtime kernel: dropped a {channel} message: {e}");
            None
        }
    }
}

async fn shell_task(
    mut sock: RouterSocket,
    mut out: mpsc::UnboundedReceiver<Message>,
    signer: Signer,
    requests: Arc<Requests>,
    exec: std::sync::mpsc::Sender<CellRequest>,
) {
    loop {
        tokio::select! {
            m = out.recv() => {
                let Some(m) = m else { break };
                if let Err(e) = sock.send(signer.encode(&m)).await {
                    eprintln!("beamtime kernel: shell send failed: {e}");
                }
            }
            z = sock.recv() => {
                let Ok(z) = z else { continue };
                let Some(m) = accept(&signer, "shell", z) else { continue };
                if m.msg_type() == "execute_request" {
                    let _ = exec.send(CellRequest(m));
                } else {
                    // Everything else answers at once, even while a cell runs (spec §9.4).
                    requests.handle_shell(&m);
                }
            }
        }
    }
}

async fn control_task(
    mut sock: RouterSocket,
    signer: Signer,
    requests: Arc<Requests>,
    publisher: Publisher,
    interrupt: Arc<AtomicBool>,
    shutdown: Arc<Notify>,
) {
    while let Ok(z) = sock.recv().await {
        let Some(m) = accept(&signer, "control", z) else { continue };
        publisher.status(&m, "busy");
        let (msg_type, content, stop) = match m.msg_type() {
            "kernel_info_request" => ("kernel_info_reply", requests.kernel_info(), false),
            "interrupt_request" => {
                interrupt.store(true, Ordering::SeqCst);
                ("interrupt_reply", json!({"status": "ok"}), false)
            }
            "shutdown_request" => {
                let restart = m.content.get("restart").and_then(Value::as_bool).unwrap_or(false);
                interrupt.store(true, Ordering::SeqCst);
                ("shutdown_reply", json!({"status": "ok", "restart": restart}), true)
            }
            other => {
                eprintln!("beamtime kernel: ignored control message {other}");
                publisher.status(&m, "idle");
                continue;
            }
        };
        let reply = Message::reply_to(&m, &publisher.session, msg_type, content);
        let _ = sock.send(signer.encode(&reply)).await;
        publisher.status(&m, "idle");
        if stop {
            shutdown.notify_one();
        }
    }
}

async fn stdin_task(
    mut sock: RouterSocket,
    mut requests: mpsc::UnboundedReceiver<InputRequest>,
    signer: Signer,
) {
    while let Some((req, answer)) = requests.recv().await {
        if sock.send(signer.encode(&req)).await.is_err() {
            let _ = answer.send(None);
            continue;
        }
        let value = loop {
            match sock.recv().await {
                Ok(z) => {
                    let Some(m) = accept(&signer, "stdin", z) else { continue };
                    if m.msg_type() == "input_reply" {
                        break m.content.get("value").and_then(Value::as_str).map(str::to_string);
                    }
                }
                Err(_) => break None,
            }
        };
        let _ = answer.send(value);
    }
}
