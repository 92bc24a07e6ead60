//! spec: server-server API, "Transactions".

use std::sync::Arc;

use ruma::api::federation::transactions::send_transaction_message::v1 as send;

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::federation::transaction,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(send_transaction)
}

async fn send_transaction(server: Arc<Server>, req: Ruma<send::Request>) -> Result<send::Response> {
    let origin = req.origin().to_owned();
    let results = transaction::receive(&server, &origin, req.body).await?;
    Ok(send::Response::new(results))
}
