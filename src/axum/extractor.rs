//! The extractors: [`Conn`] (a guarded connection acquired with the route's class) and the
//! route's [`Criticality`].

use crate::admission::GuardedConn;
use crate::criticality::Criticality;
use crate::error::Error;
use crate::guard::AcquireContext;
use crate::layer::RequestContext;
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A guarded connection acquired with the route's class.
///
/// The route must be under a guard layer
/// ([`Guard::critical`](crate::guard::Guard::critical),
/// [`Guard::standard`](crate::guard::Guard::standard),
/// [`Guard::non_critical`](crate::guard::Guard::non_critical)); without one the request is
/// answered 500, naming the problem. Refusals become 429/503 responses with `Retry-After`.
#[derive(Debug)]
pub struct Conn(pub GuardedConn);

impl<S: Send + Sync> FromRequestParts<S> for Conn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let ctx = parts
            .extensions
            .get::<RequestContext>()
            .ok_or(Error::MissingLayer)?;
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| Arc::<str>::from(p.as_str()));
        let conn = ctx
            .guard
            .acquire_until(
                ctx.class,
                AcquireContext {
                    user: ctx.user.clone(),
                    route,
                },
                ctx.deadline,
            )
            .await?;
        Ok(Conn(conn))
    }
}

impl Deref for Conn {
    type Target = GuardedConn;

    fn deref(&self) -> &GuardedConn {
        &self.0
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut GuardedConn {
        &mut self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Criticality {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .map(|c| c.class)
            .unwrap_or_default())
    }
}
