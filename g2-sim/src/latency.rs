//! The latency model: nodes are random points on a sphere or a plane (as in the
//! Pastry paper's simulations) and the one-way delay between two nodes grows with
//! their distance.

use std::str::FromStr;
use std::time::Duration;

use crate::rng::SimRng;

/// Where nodes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Uniform on the unit sphere; delay ∝ great-circle distance.
    Sphere,
    /// Uniform in the unit square; delay ∝ Euclidean distance.
    Plane,
}

impl FromStr for Topology {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sphere" => Ok(Self::Sphere),
            "plane" => Ok(Self::Plane),
            other => Err(format!(
                "unknown topology {other:?} (expected sphere or plane)"
            )),
        }
    }
}

/// Node positions and the delays between them.
#[derive(Clone, Debug)]
pub struct LatencyModel {
    topology: Topology,
    /// One-way delay across the largest distance (half the sphere, the square's diagonal).
    max_delay_ns: f64,
    points: Vec<[f32; 3]>,
}

impl LatencyModel {
    /// An empty model with delays up to `max_delay` one way.
    pub fn new(topology: Topology, max_delay: Duration) -> Self {
        Self {
            topology,
            max_delay_ns: max_delay.as_nanos() as f64,
            points: Vec::new(),
        }
    }

    /// Places a new node at a random point; returns its index.
    pub fn place(&mut self, rng: &mut SimRng) -> usize {
        let p = match self.topology {
            Topology::Sphere => {
                let z = 2.0 * rng.unit() - 1.0;
                let phi = std::f64::consts::TAU * rng.unit();
                let r = (1.0 - z * z).sqrt();
                [(r * phi.cos()) as f32, (r * phi.sin()) as f32, z as f32]
            }
            Topology::Plane => [rng.unit() as f32, rng.unit() as f32, 0.0],
        };
        self.points.push(p);
        self.points.len() - 1
    }

    /// A monotone proxy of the distance between `a` and `b` (cheap; for comparisons).
    pub fn closeness_key(&self, a: usize, b: usize) -> f32 {
        let (p, q) = (self.points[a], self.points[b]);
        match self.topology {
            Topology::Sphere => -(p[0] * q[0] + p[1] * q[1] + p[2] * q[2]),
            Topology::Plane => (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2),
        }
    }

    /// The placement model.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Where node `i` is: a point on the unit sphere, or in the unit square (z = 0).
    /// Straight-line distance between points orders pairs as delay does.
    pub fn position(&self, i: usize) -> [f32; 3] {
        self.points[i]
    }

    /// One-way delay from `a` to `b` in nanoseconds (at least 1 µs).
    pub fn delay_ns(&self, a: usize, b: usize) -> u64 {
        let (p, q) = (self.points[a], self.points[b]);
        let frac = match self.topology {
            Topology::Sphere => {
                let dot = f64::from(p[0] * q[0] + p[1] * q[1] + p[2] * q[2]).clamp(-1.0, 1.0);
                dot.acos() / std::f64::consts::PI
            }
            Topology::Plane => {
                f64::from((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
                    / std::f64::consts::SQRT_2
            }
        };
        ((frac * self.max_delay_ns) as u64).max(1_000)
    }
}
