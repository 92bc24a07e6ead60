//! What every workload shares: the run's identity, and bounded, concurrent
//! set-up steps (register users, create rooms, join, fill rooms).

use std::time::Instant;

use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;

use crate::client::{ApiResult, Client, User, random_suffix};

pub struct Ctx {
    pub client: Client,
    /// Random per run, part of every user name, so runs never collide.
    pub run_id: String,
    pub password: String,
    /// In-flight requests during set-up (not measured).
    pub setup_concurrency: usize,
    /// The server's pid (`--pid`), for workloads that read its memory themselves.
    pub pid: Option<u32>,
}

impl Ctx {
    pub fn new(client: Client, setup_concurrency: usize) -> Self {
        Self {
            client,
            run_id: random_suffix(8),
            password: format!("pw-{}", random_suffix(16)),
            setup_concurrency: setup_concurrency.max(1),
            pid: None,
        }
    }

    pub fn username(&self, role: &str, i: usize) -> String {
        format!("cb{}_{role}{i}", self.run_id)
    }

    pub async fn register(&self, role: &str, i: usize) -> ApiResult<User> {
        self.client
            .register(&self.username(role, i), &self.password)
            .await
    }

    /// Registers `n` users named `<role><i>`, in order.
    pub async fn register_many(&self, role: &str, n: usize) -> ApiResult<Vec<User>> {
        let t = Instant::now();
        let users: Vec<User> = stream::iter(0..n)
            .map(|i| self.register(role, i))
            .buffered(self.setup_concurrency)
            .try_collect()
            .await?;
        if n > 1 {
            progress(&format!("registered {n} users"), t);
        }
        Ok(users)
    }

    /// Public rooms created by `creator`, in order.
    pub async fn create_rooms(&self, creator: &User, n: usize) -> ApiResult<Vec<String>> {
        let t = Instant::now();
        // Room creation writes many events; a few at a time is enough.
        let conc = self.setup_concurrency.min(4);
        let rooms: Vec<String> = stream::iter(0..n)
            .map(|i| async move {
                let name = format!("bench {} {i}", self.run_id);
                self.client.create_room(creator, &name).await
            })
            .buffered(conc)
            .try_collect()
            .await?;
        progress(&format!("created {n} rooms"), t);
        Ok(rooms)
    }

    /// Every user joins every room.
    pub async fn join_all(&self, users: &[User], rooms: &[String]) -> ApiResult<()> {
        let t = Instant::now();
        let pairs: Vec<(&User, &String)> = rooms
            .iter()
            .flat_map(|r| users.iter().map(move |u| (u, r)))
            .collect();
        let n = pairs.len();
        stream::iter(pairs)
            .map(|(u, r)| self.client.join(u, r))
            .buffer_unordered(self.setup_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        if n > 1 {
            progress(&format!("{n} joins"), t);
        }
        Ok(())
    }

    /// Sends `per_room` text messages into each room (in order within a room).
    pub async fn fill_rooms(
        &self,
        user: &User,
        rooms: &[String],
        per_room: usize,
    ) -> ApiResult<()> {
        let t = Instant::now();
        let run = &self.run_id;
        let jobs: Vec<(usize, &String, usize)> = (0..per_room)
            .flat_map(|m| rooms.iter().enumerate().map(move |(ri, r)| (ri, r, m)))
            .collect();
        let n = jobs.len();
        // Rooms are filled round-robin, so concurrent sends go to different rooms.
        stream::iter(jobs)
            .map(|(ri, room, m)| async move {
                let content =
                    json!({"msgtype": "m.text", "body": format!("filler {m} of room {ri}")});
                self.client
                    .send(user, room, &format!("fill-{run}-{ri}-{m}"), &content)
                    .await
                    .map(|_| ())
            })
            .buffered(self.setup_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        progress(&format!("sent {n} filler messages"), t);
        Ok(())
    }
}

pub fn progress(what: &str, since: Instant) {
    eprintln!("  setup: {what} in {:.1} s", since.elapsed().as_secs_f64());
}
