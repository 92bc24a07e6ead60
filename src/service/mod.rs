//! The domain: what the server does, independent of HTTP.

pub mod account_data;
pub mod accounts;
pub mod directory;
pub mod e2ee;
pub mod federation;
pub mod filter;
pub mod ignore;
pub mod media;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipts;
pub mod report;
pub mod rooms;
pub mod search;
pub mod space;
pub mod sync;
pub mod to_device;
pub mod typing;
pub mod uia;
pub mod user_directory;
