//! Exact spherical codes whose one-vs-rest margins are known in closed form.
//!
//! Every code is returned as a $K\times d$ matrix of unit rows. With $t$ the largest cosine
//! between distinct rows, the margin ([`super::margin`]) is $m=1-t$ whenever the nearest
//! neighbours of each point have centroid $t\,w_k$ (true for every code below by symmetry), and
//! $m=K/(K-1)$ for the simplex:
//!
//! | name | $(K,d)$ | construction | $t$ | $m$ |
//! |---|---|---|---|---|
//! | `simplex:K` | $(K,K-1)$ | Helmert basis of $\mathbf 1^\perp$, scaled | $-\frac1{K-1}$ | $\frac K{K-1}$ |
//! | `polygon:K` | $(K,2)$ | $(\cos\frac{2\pi k}K,\sin\frac{2\pi k}K)$ | $\cos\frac{2\pi}K$ | $1-\cos\frac{2\pi}K$ |
//! | `cross:d` | $(2d,d)$ | $\pm e_i$ | $0$ | $1$ |
//! | `icosahedron` | $(12,3)$ | cyclic permutations of $(0,\pm1,\pm\varphi)$ | $\frac1{\sqrt5}$ | $1-\frac1{\sqrt5}$ |
//! | `e8` | $(240,8)$ | roots $\pm e_i\pm e_j$ and $\frac12(\pm1)^8$ with an even number of minus signs, $/\sqrt2$ | $\frac12$ | $\frac12$ |
//! | `higman-sims` | $(100,22)$ | Gram $I-\frac4{11}A+\frac1{11}(J-I-A)$ of the Higman–Sims graph | $\frac1{11}$ | $\frac{10}{11}$ |
//! | `mclaughlin` | $(162,21)$ | Gram $I-\frac27A+\frac17(J-I-A)$ of the $\mathrm{srg}(162,56,10,24)$ | $\frac17$ | $\frac67$ |
//!
//! These are the configurations behind the $(d,K)$ pairs $(3,12)$, $(8,240)$, $(22,100)$ and
//! $(21,162)$ of Jiang et al. (arXiv 2310.05351; the authors' `hardmax_solution.py` runs exactly
//! these pairs), all universally optimal spherical codes (Cohn & Kumar, JAMS 2007, Table 1).
//!
//! **The two graph codes.** The extended binary Golay code (the cyclic $(23,12,7)$ code — length, dimension, distance — with
//! generator $g(x)=1+x+x^5+x^6+x^7+x^9+x^{11}$ plus a parity bit) gives the Steiner systems
//! $S(4,7,23)$ (its 253 weight-7 words) and $S(5,8,24)$ (759 octads), hence $S(3,6,22)$ (the 77
//! octads through two fixed coordinates, with those removed).
//! *Higman–Sims graph* $\mathrm{srg}(100,22,0,6)$: a vertex $\infty$, the 22 points and the 77
//! hexads of $S(3,6,22)$; $\infty$ is joined to the points, a point to the hexads containing it,
//! two hexads when disjoint. *McLaughlin graph* $\mathrm{srg}(275,112,30,56)$ (G. Royle's
//! construction): the 23 points and 253 heptads of $S(4,7,23)$, a point joined to the heptads
//! missing it and two heptads joined when they meet in one point; switching with respect to
//! point 0 and deleting it. Its 162 non-neighbours of a vertex induce $\mathrm{srg}(162,56,10,24)$.
//! For an $\mathrm{srg}(v,k,\lambda,\mu)$ with smallest eigenvalue $s$ of multiplicity $f$, the
//! matrix $I+\frac sk A+\frac{-1-s}{v-k-1}(J-I-A)$ is a scaled projector of rank $f$ (its other
//! eigenvalues vanish), so its factor gives $v$ unit vectors in $\mathbb R^f$ with the two
//! cosines shown ($s=-8,f=22$ and $s=-16,f=21$). Every construction is checked on the fly
//! (strongly-regular parameters, rank, unit norms) and an inconsistency is an error.

use crate::error::{Error, Result};
use crate::linalg::sym_eigen;
use ndarray::Array2;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A named exact configuration (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Code {
    /// Simplex ETF with $K$ vertices in $\mathbb R^{K-1}$.
    Simplex {
        /// $K\ge2$.
        k: usize,
    },
    /// Regular $K$-gon in $\mathbb R^2$.
    Polygon {
        /// $K\ge3$.
        k: usize,
    },
    /// Cross-polytope $\{\pm e_i\}\subset\mathbb R^d$, $K=2d$.
    Cross {
        /// $d\ge1$.
        d: usize,
    },
    /// Icosahedron, $(K,d)=(12,3)$.
    Icosahedron,
    /// $E_8$ root system, $(240,8)$.
    E8,
    /// Higman–Sims code, $(100,22)$.
    HigmanSims,
    /// McLaughlin code, $(162,21)$.
    McLaughlin,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Simplex { k } => write!(f, "simplex:{k}"),
            Code::Polygon { k } => write!(f, "polygon:{k}"),
            Code::Cross { d } => write!(f, "cross:{d}"),
            Code::Icosahedron => write!(f, "icosahedron"),
            Code::E8 => write!(f, "e8"),
            Code::HigmanSims => write!(f, "higman-sims"),
            Code::McLaughlin => write!(f, "mclaughlin"),
        }
    }
}

impl FromStr for Code {
    type Err = Error;
    /// Parses `simplex:K`, `polygon:K`, `cross:d`, `icosahedron`, `e8`, `higman-sims` (or
    /// `hs100`), `mclaughlin` (or `mcl162`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::param(
                "config",
                format!(
                    "unknown configuration `{s}`; use simplex:K, polygon:K, cross:d, icosahedron, e8, higman-sims or mclaughlin"
                ),
            )
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |min: usize| -> Result<usize> {
            let a = arg.ok_or_else(|| {
                Error::param("config", format!("`{name}` needs a size, e.g. `{name}:6`"))
            })?;
            let v: usize = a
                .parse()
                .map_err(|_| Error::param("config", format!("cannot parse `{a}` in `{s}`")))?;
            if v < min {
                return Err(Error::param(
                    "config",
                    format!("`{name}` needs a size >= {min}, got {v}"),
                ));
            }
            Ok(v)
        };
        let code = match name.to_ascii_lowercase().as_str() {
            "simplex" => Code::Simplex { k: num(2)? },
            "polygon" => Code::Polygon { k: num(3)? },
            "cross" => Code::Cross { d: num(1)? },
            "icosahedron" => Code::Icosahedron,
            "e8" => Code::E8,
            "higman-sims" | "hs100" => Code::HigmanSims,
            "mclaughlin" | "mcl162" => Code::McLaughlin,
            _ => return Err(bad()),
        };
        if arg.is_some() && !matches!(name, "simplex" | "polygon" | "cross") {
            return Err(bad());
        }
        Ok(code)
    }
}

impl Code {
    /// $(K,d)$.
    pub fn dims(&self) -> (usize, usize) {
        match *self {
            Code::Simplex { k } => (k, k - 1),
            Code::Polygon { k } => (k, 2),
            Code::Cross { d } => (2 * d, d),
            Code::Icosahedron => (12, 3),
            Code::E8 => (240, 8),
            Code::HigmanSims => (100, 22),
            Code::McLaughlin => (162, 21),
        }
    }

    /// Closed-form one-vs-rest margin $m_k$ (equal for all $k$).
    pub fn margin(&self) -> f64 {
        match *self {
            Code::Simplex { k } => k as f64 / (k as f64 - 1.0),
            _ => 1.0 - self.max_cosine(),
        }
    }

    /// Closed-form largest cosine between distinct rows.
    pub fn max_cosine(&self) -> f64 {
        match *self {
            Code::Simplex { k } => -1.0 / (k as f64 - 1.0),
            Code::Polygon { k } => {
                if k == 3 {
                    -0.5
                } else {
                    (2.0 * std::f64::consts::PI / k as f64).cos()
                }
            }
            Code::Cross { d } => {
                if d == 1 {
                    -1.0
                } else {
                    0.0
                }
            }
            Code::Icosahedron => 1.0 / 5f64.sqrt(),
            Code::E8 => 0.5,
            Code::HigmanSims => 1.0 / 11.0,
            Code::McLaughlin => 1.0 / 7.0,
        }
    }

    /// The unit rows ($K\times d$).
    pub fn build(&self) -> Result<Array2<f64>> {
        let w = match *self {
            Code::Simplex { k } => {
                if k < 2 {
                    return Err(Error::param("config", "simplex needs K >= 2"));
                }
                let s = (k as f64 / (k as f64 - 1.0)).sqrt();
                crate::ufm::etf::centred_basis(k) * s
            }
            Code::Polygon { k } => {
                if k < 3 {
                    return Err(Error::param("config", "polygon needs K >= 3"));
                }
                Array2::from_shape_fn((k, 2), |(i, j)| {
                    let a = 2.0 * std::f64::consts::PI * i as f64 / k as f64;
                    if j == 0 {
                        a.cos()
                    } else {
                        a.sin()
                    }
                })
            }
            Code::Cross { d } => {
                if d < 1 {
                    return Err(Error::param("config", "cross needs d >= 1"));
                }
                Array2::from_shape_fn((2 * d, d), |(i, j)| {
                    if i % d == j {
                        if i < d {
                            1.0
                        } else {
                            -1.0
                        }
                    } else {
                        0.0
                    }
                })
            }
            Code::Icosahedron => icosahedron(),
            Code::E8 => e8_roots(),
            Code::HigmanSims => {
                let g = higman_sims_graph()?;
                check_srg(&g, (100, 22, 0, 6), "Higman-Sims graph")?;
                srg_code(&g, -4.0 / 11.0, 1.0 / 11.0, 22)?
            }
            Code::McLaughlin => {
                let mcl = mclaughlin_graph()?;
                check_srg(&mcl, (275, 112, 30, 56), "McLaughlin graph")?;
                let non: Vec<usize> = (1..mcl.n).filter(|&j| !mcl.has(0, j)).collect();
                let g = mcl.induced(&non);
                check_srg(&g, (162, 56, 10, 24), "second subconstituent of McLaughlin")?;
                srg_code(&g, -2.0 / 7.0, 1.0 / 7.0, 21)?
            }
        };
        // Exact unit rows (they are unit up to rounding already).
        let mut w = w;
        for mut r in w.rows_mut() {
            let n = r.dot(&r).sqrt();
            r.mapv_inplace(|v| v / n);
        }
        Ok(w)
    }

    /// Where the configuration and its optimality come from.
    pub fn source(&self) -> &'static str {
        match self {
            Code::Simplex { .. } => {
                "simplex ETF (Papyan et al. 2020); optimal softmax code for K <= d+1"
            }
            Code::Polygon { .. } => "regular polygon",
            Code::Cross { .. } => "cross-polytope (orthoplex)",
            Code::Icosahedron => "icosahedron: optimal Tammes code for 12 points in R^3",
            Code::E8 => {
                "E8 roots: kissing configuration of R^8, universally optimal (Cohn-Kumar 2007)"
            }
            Code::HigmanSims => "Higman-Sims code, universally optimal (Cohn-Kumar 2007)",
            Code::McLaughlin => "162-point McLaughlin code, universally optimal (Cohn-Kumar 2007)",
        }
    }
}

/// The code of this module with $K$ points in $\mathbb R^d$, if there is one: the best known
/// configuration to compare a $K>d+1$ classifier with.
pub fn reference_code(k: usize, d: usize) -> Option<Code> {
    match (k, d) {
        _ if k >= 2 && k == d + 1 => Some(Code::Simplex { k }),
        (12, 3) => Some(Code::Icosahedron),
        (240, 8) => Some(Code::E8),
        (100, 22) => Some(Code::HigmanSims),
        (162, 21) => Some(Code::McLaughlin),
        _ if d >= 2 && k == 2 * d => Some(Code::Cross { d }),
        (k, 2) if k >= 3 => Some(Code::Polygon { k }),
        _ => None,
    }
}

fn icosahedron() -> Array2<f64> {
    let phi = (1.0 + 5f64.sqrt()) / 2.0;
    let mut rows = Vec::with_capacity(12);
    for s1 in [1.0, -1.0] {
        for s2 in [1.0, -1.0] {
            let base = [0.0, s1, s2 * phi];
            for shift in 0..3 {
                rows.push([
                    base[shift % 3],
                    base[(shift + 1) % 3],
                    base[(shift + 2) % 3],
                ]);
            }
        }
    }
    Array2::from_shape_fn((12, 3), |(i, j)| rows[i][j])
}

fn e8_roots() -> Array2<f64> {
    let mut rows: Vec<[f64; 8]> = Vec::with_capacity(240);
    for i in 0..8 {
        for j in i + 1..8 {
            for si in [1.0, -1.0] {
                for sj in [1.0, -1.0] {
                    let mut r = [0.0; 8];
                    r[i] = si;
                    r[j] = sj;
                    rows.push(r);
                }
            }
        }
    }
    for mask in 0u32..256 {
        if mask.count_ones() % 2 == 0 {
            let mut r = [0.5; 8];
            for (b, v) in r.iter_mut().enumerate() {
                if mask & (1 << b) != 0 {
                    *v = -0.5;
                }
            }
            rows.push(r);
        }
    }
    Array2::from_shape_fn((rows.len(), 8), |(i, j)| rows[i][j] / 2f64.sqrt())
}

/// A simple undirected graph with bitset rows.
#[derive(Clone, Debug)]
struct Graph {
    n: usize,
    words: usize,
    adj: Vec<u64>,
}

impl Graph {
    fn new(n: usize) -> Self {
        let words = n.div_ceil(64);
        Graph {
            n,
            words,
            adj: vec![0; n * words],
        }
    }
    fn has(&self, i: usize, j: usize) -> bool {
        self.adj[i * self.words + j / 64] >> (j % 64) & 1 == 1
    }
    fn set(&mut self, i: usize, j: usize, on: bool) {
        for (a, b) in [(i, j), (j, i)] {
            let w = &mut self.adj[a * self.words + b / 64];
            if on {
                *w |= 1 << (b % 64);
            } else {
                *w &= !(1 << (b % 64));
            }
        }
    }
    fn degree(&self, i: usize) -> usize {
        self.adj[i * self.words..(i + 1) * self.words]
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum()
    }
    fn common(&self, i: usize, j: usize) -> usize {
        let (a, b) = (
            &self.adj[i * self.words..(i + 1) * self.words],
            &self.adj[j * self.words..(j + 1) * self.words],
        );
        a.iter()
            .zip(b)
            .map(|(x, y)| (x & y).count_ones() as usize)
            .sum()
    }
    fn induced(&self, keep: &[usize]) -> Graph {
        let mut g = Graph::new(keep.len());
        for (a, &i) in keep.iter().enumerate() {
            for (b, &j) in keep.iter().enumerate().skip(a + 1) {
                if self.has(i, j) {
                    g.set(a, b, true);
                }
            }
        }
        g
    }
}

fn check_srg(
    g: &Graph,
    (v, k, lambda, mu): (usize, usize, usize, usize),
    what: &str,
) -> Result<()> {
    let fail = |why: String| Error::numerical(format!("construction of the {what}"), why);
    if g.n != v {
        return Err(fail(format!("{} vertices instead of {v}", g.n)));
    }
    for i in 0..v {
        if g.degree(i) != k {
            return Err(fail(format!("vertex {i} has degree {}", g.degree(i))));
        }
        for j in i + 1..v {
            let want = if g.has(i, j) { lambda } else { mu };
            if g.common(i, j) != want {
                return Err(fail(format!(
                    "vertices {i},{j} have {} common neighbours",
                    g.common(i, j)
                )));
            }
        }
    }
    Ok(())
}

/// All 4096 words of the cyclic binary Golay code of length 23 (bit $i$ = coefficient of $x^i$).
fn golay23() -> Vec<u32> {
    let g: u32 = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 9) | (1 << 11);
    let basis: Vec<u32> = (0..12).map(|i| g << i).collect();
    (0u32..4096)
        .map(|m| {
            basis
                .iter()
                .enumerate()
                .filter(|(i, _)| m >> i & 1 == 1)
                .fold(0, |acc, (_, b)| acc ^ b)
        })
        .collect()
}

fn higman_sims_graph() -> Result<Graph> {
    let words = golay23();
    // Extended code: parity bit 23; octads through coordinates 22 and 23 give S(3,6,22).
    let hexads: Vec<u32> = words
        .iter()
        .map(|&w| {
            if w.count_ones() % 2 == 1 {
                w | 1 << 23
            } else {
                w
            }
        })
        .filter(|w| w.count_ones() == 8 && w >> 22 & 1 == 1 && w >> 23 & 1 == 1)
        .map(|w| w & ((1 << 22) - 1))
        .collect();
    if hexads.len() != 77 {
        return Err(Error::numerical(
            "construction of S(3,6,22)",
            format!("{} hexads instead of 77", hexads.len()),
        ));
    }
    let mut g = Graph::new(100);
    for p in 0..22 {
        g.set(0, 1 + p, true);
        for (h, &hx) in hexads.iter().enumerate() {
            if hx >> p & 1 == 1 {
                g.set(1 + p, 23 + h, true);
            }
        }
    }
    for a in 0..77 {
        for b in a + 1..77 {
            if hexads[a] & hexads[b] == 0 {
                g.set(23 + a, 23 + b, true);
            }
        }
    }
    Ok(g)
}

fn mclaughlin_graph() -> Result<Graph> {
    let heptads: Vec<u32> = golay23()
        .into_iter()
        .filter(|w| w.count_ones() == 7)
        .collect();
    if heptads.len() != 253 {
        return Err(Error::numerical(
            "construction of S(4,7,23)",
            format!("{} heptads instead of 253", heptads.len()),
        ));
    }
    let mut x = Graph::new(276);
    for p in 0..23 {
        for (b, &hb) in heptads.iter().enumerate() {
            if hb >> p & 1 == 0 {
                x.set(p, 23 + b, true);
            }
        }
    }
    for a in 0..253 {
        for b in a + 1..253 {
            if (heptads[a] & heptads[b]).count_ones() == 1 {
                x.set(23 + a, 23 + b, true);
            }
        }
    }
    // Switch with respect to vertex 0 (toggle edges between its neighbourhood and the rest),
    // then delete it.
    let nb: Vec<bool> = (0..276).map(|j| x.has(0, j)).collect();
    for u in 1..276 {
        for w in u + 1..276 {
            if nb[u] != nb[w] {
                let on = !x.has(u, w);
                x.set(u, w, on);
            }
        }
    }
    let keep: Vec<usize> = (1..276).collect();
    Ok(x.induced(&keep))
}

/// Unit vectors with Gram matrix $I+aA+b(J-I-A)$, which must have rank `rank`.
fn srg_code(g: &Graph, a: f64, b: f64, rank: usize) -> Result<Array2<f64>> {
    let n = g.n;
    let gram = Array2::from_shape_fn((n, n), |(i, j)| {
        if i == j {
            1.0
        } else if g.has(i, j) {
            a
        } else {
            b
        }
    });
    let (vals, vecs) = sym_eigen(gram.view())?;
    let top = vals[n - 1];
    let zero = vals[..n - rank].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if zero > 1e-9 * top || vals[n - rank] < 0.5 * top {
        return Err(Error::numerical(
            "spherical code from a strongly regular graph",
            format!("Gram matrix is not a rank-{rank} projector (eigenvalues {zero:e}, {top})"),
        ));
    }
    Ok(Array2::from_shape_fn((n, rank), |(i, j)| {
        let c = n - rank + j;
        vecs[[i, c]] * vals[c].sqrt()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_dims() {
        assert_eq!("simplex:5".parse::<Code>().unwrap(), Code::Simplex { k: 5 });
        assert_eq!("E8".parse::<Code>().unwrap(), Code::E8);
        assert_eq!("hs100".parse::<Code>().unwrap(), Code::HigmanSims);
        assert!("polygon:2".parse::<Code>().is_err());
        assert!("e8:3".parse::<Code>().is_err());
        assert!("dodecahedron".parse::<Code>().is_err());
        assert_eq!(Code::McLaughlin.dims(), (162, 21));
        assert_eq!(reference_code(12, 3), Some(Code::Icosahedron));
        assert_eq!(reference_code(5, 4), Some(Code::Simplex { k: 5 }));
        assert_eq!(reference_code(8, 4), Some(Code::Cross { d: 4 }));
        assert_eq!(reference_code(7, 2), Some(Code::Polygon { k: 7 }));
        assert_eq!(reference_code(13, 3), None);
    }

    #[test]
    fn golay_code_has_the_right_weight_distribution() {
        let w = golay23();
        let count = |k: u32| w.iter().filter(|x| x.count_ones() == k).count();
        // Weight enumerator of the [23,12,7] Golay code.
        assert_eq!(
            (count(0), count(7), count(8), count(11), count(12)),
            (1, 253, 506, 1288, 1288)
        );
        assert_eq!((1..7).map(count).sum::<usize>(), 0);
    }
}
