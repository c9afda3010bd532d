//! The extractors: [`Conn`] (a guarded connection acquired with the route's class), the
//! route's [`Criticality`], and the request's [`RequestContext`].

use super::route_names::route_name;
use crate::admission::GuardedConn;
use crate::criticality::Criticality;
use crate::error::Error;
use crate::guard::AcquireContext;
use crate::layer::{context, RequestContext};
use axum::extract::{FromRequestParts, MatchedPath, OptionalFromRequestParts};
use axum::http::request::Parts;
use std::ops::{Deref, DerefMut};

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
        let route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| route_name(p.as_str()));
        // Kept across the wait: the copy in the extensions is borrowed, a context only
        // current in the task cloned.
        let found = RequestContext::find_borrowed(&parts.extensions).ok_or(Error::MissingLayer)?;
        let ctx: &RequestContext = &found;
        ctx.guard
            .acquire_until(
                ctx.class,
                AcquireContext {
                    user: ctx.user.clone(),
                    route,
                },
                ctx.deadline,
            )
            .await
            .map(Conn)
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
        Ok(context::read(&parts.extensions, |c| c.class).unwrap_or_default())
    }
}

/// The request's [`RequestContext`]; on a route without a guard layer the request is
/// answered 500, naming the problem (`Option<RequestContext>` gets `None` instead).
impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        RequestContext::find(&parts.extensions).ok_or(Error::MissingLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(RequestContext::find(&parts.extensions))
    }
}
