//! Classifier geometry beyond the simplex ETF: one-vs-rest margins (generalized neural
//! collapse for $K>d+1$ classes) and explicit spherical codes to compare with.
//!
//! With unit-norm class vectors $w_1,\dots,w_K\in\mathbb R^d$, the **one-vs-rest margin** of
//! class $k$ is the distance from $w_k$ to the convex hull of the other classes,
//! $$m_k=\min_{\alpha\in\Delta_{K-1}}\Big\lVert w_k-\sum_{j\ne k}\alpha_jw_j\Big\rVert_2 ,$$
//! and a *softmax code* maximises $\min_km_k$ (Jiang, Zhou, Balzano, Zhu et al., *Generalized
//! Neural Collapse for a Large Number of Classes*, arXiv 2310.05351, Def. 2.1). When $K\le d+1$
//! the simplex ETF is optimal with $m_k=K/(K-1)$; for $K>d+1$ no closed form is known in
//! general and the classifier of a (spherical) UFM tends to a softmax code.
//!
//! * [`margin`]: $m_k$ as an exact minimum-norm-point problem (Wolfe's algorithm) with a
//!   Frank–Wolfe duality-gap certificate and a separating-hyperplane lower bound.
//! * [`codes`]: exact constructions of the configurations whose margins are known in closed
//!   form (simplex, regular polygon, cross-polytope, icosahedron, the $E_8$ roots, the
//!   Higman–Sims code in $\mathbb R^{22}$ and the 162-point McLaughlin code in $\mathbb R^{21}$).

pub mod codes;
pub mod margin;

pub use codes::{reference_code, Code};
pub use margin::{
    margins, min_norm_point, one_vs_rest_margin, ClassMargin, MarginOptions, MarginReport,
    MinNormPoint,
};
