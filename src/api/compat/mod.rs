//! The sibling services' APIs (`COMPAT_API`), each mapped onto ours in its own file.
//! (Minimal version from the `sio` branch: seeds 003 and 004 only.)

pub(crate) mod common;
pub(crate) mod seed003;
pub(crate) mod seed004;

use utoipa_axum::router::OpenApiRouter;

use crate::api::state::AppState;
use crate::config::CompatApis;

/// The routes of the dialects `apis` turns on.
pub(crate) fn router(apis: CompatApis) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::new();
    if apis.seed003 {
        router = router.merge(seed003::router());
    }
    if apis.seed004 {
        router = router.merge(seed004::router());
    }
    router
}
