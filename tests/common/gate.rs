//! A TCP gate in front of a server's federation listener: the port in the
//! server's name is the gate's, so closing it cuts every other server off
//! from this one (a network partition) until it opens again.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{net::TcpListener, task::AbortHandle};

pub struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accepting: AbortHandle,
}

impl Gate {
    pub async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepting = tokio::spawn(accept(
            listener,
            open.clone(),
            target.clone(),
            connections.clone(),
        ))
        .abort_handle();
        Self {
            port,
            open,
            target,
            connections,
            accepting,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn forward_to(&self, addr: SocketAddr) {
        *self.target.lock().unwrap() = Some(addr);
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accepting.abort();
        self.close();
    }
}

async fn accept(
    listener: TcpListener,
    open: Arc<AtomicBool>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let to = *target.lock().unwrap();
        let (true, Some(to)) = (open.load(Ordering::SeqCst), to) else {
            continue; // dropped: the connection is refused
        };
        let relay = tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut open_connections = connections.lock().unwrap();
        open_connections.retain(|c| !c.is_finished());
        open_connections.push(relay.abort_handle());
    }
}
