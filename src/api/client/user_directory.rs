//! spec: "User Directory" (`/user_directory/search`).

use std::sync::Arc;

use ruma::api::client::user_directory::search_users::v3::{Request, Response, User};

use crate::{
    Result, Server,
    api::{Routes, Ruma},
    service::user_directory,
};

pub fn routes(router: Routes) -> Routes {
    router.ruma(search)
}

async fn search(server: Arc<Server>, req: Ruma<Request>) -> Result<Response> {
    let (found, limited) = user_directory::search(
        &server,
        &req.user().user_id,
        &req.body.search_term,
        req.body.limit.into(),
    )
    .await?;
    let results = found
        .into_iter()
        .map(|f| {
            let mut user = User::new(f.user_id);
            user.display_name = f.displayname;
            user.avatar_url = f.avatar_url.map(Into::into);
            user
        })
        .collect();
    Ok(Response::new(results, limited))
}
