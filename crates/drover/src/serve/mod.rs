//! `drover serve`: the long-running side of drover. A reconciler keeps the
//! services of the fleet at their desired state; per service port, a reverse
//! proxy (`proxy`) sends traffic to the instances the reconciler says are
//! routable, and tells it when a draining instance has no work left.

pub mod proxy;
