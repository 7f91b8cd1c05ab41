//! Property tests for the geometry module.

use proptest::prelude::*;

use super::{Coordinate, Roi, Snap};

const V: std::ops::Range<i64> = -1000..1000;

/// A pair of coordinates with the same (1..=4) dims.
fn coord_pair() -> impl Strategy<Value = (Coordinate, Coordinate)> {
    (1usize..=4).prop_flat_map(|d| {
        (
            prop::collection::vec(V, d).prop_map(Coordinate::from),
            prop::collection::vec(V, d).prop_map(Coordinate::from),
        )
    })
}

/// A coordinate and a non-zero divisor (either sign) with the same dims.
fn coord_divisor() -> impl Strategy<Value = (Coordinate, Coordinate)> {
    (1usize..=4).prop_flat_map(|d| {
        (
            prop::collection::vec(V, d).prop_map(Coordinate::from),
            prop::collection::vec(prop_oneof![1i64..20, -20i64..0], d).prop_map(Coordinate::from),
        )
    })
}

fn roi_of(dims: usize, shape: std::ops::Range<i64>) -> impl Strategy<Value = Roi> {
    (
        prop::collection::vec(V, dims),
        prop::collection::vec(shape, dims),
    )
        .prop_map(|(o, s)| Roi::new(o, s))
}

/// Two ROIs with the same dims; shapes may be degenerate (<= 0).
fn roi_pair() -> impl Strategy<Value = (Roi, Roi)> {
    (1usize..=4).prop_flat_map(|d| (roi_of(d, -5..300), roi_of(d, -5..300)))
}

/// Two small 1- or 2-dimensional ROIs for brute-force checks.
fn small_roi_pair() -> impl Strategy<Value = (Roi, Roi)> {
    let small = |d: usize| {
        (
            prop::collection::vec(-10i64..10, d),
            prop::collection::vec(-2i64..8, d),
        )
            .prop_map(|(o, s)| Roi::new(o, s))
    };
    (1usize..=2).prop_flat_map(move |d| (small(d), small(d)))
}

/// A ROI (possibly degenerate) and a positive voxel size with the same dims.
fn roi_voxel() -> impl Strategy<Value = (Roi, Coordinate)> {
    (1usize..=4).prop_flat_map(|d| {
        (
            roi_of(d, -5..300),
            prop::collection::vec(1i64..20, d).prop_map(Coordinate::from),
        )
    })
}

/// A ROI and grow amounts (neg, pos) with the same dims.
fn roi_grow() -> impl Strategy<Value = (Roi, Coordinate, Coordinate)> {
    (1usize..=4).prop_flat_map(|d| {
        (
            roi_of(d, -5..300),
            prop::collection::vec(-100i64..100, d).prop_map(Coordinate::from),
            prop::collection::vec(-100i64..100, d).prop_map(Coordinate::from),
        )
    })
}

proptest! {
    #[test]
    fn intersection_commutes_and_is_contained((a, b) in roi_pair()) {
        let ab = a.intersect(&b);
        let ba = b.intersect(&a);
        prop_assert_eq!(&ab, &ba);
        if !ab.is_empty() {
            prop_assert!(a.contains(&ab));
            prop_assert!(b.contains(&ab));
        } else {
            prop_assert_eq!(ab.shape(), &Coordinate::zeros(a.dims()));
            prop_assert_eq!(ab.offset(), &a.begin().elementwise_max(b.begin()));
        }
    }

    #[test]
    fn intersects_iff_intersection_nonempty((a, b) in roi_pair()) {
        prop_assert_eq!(a.intersects(&b), !a.intersect(&b).is_empty());
        prop_assert_eq!(a.intersects(&b), b.intersects(&a));
        if a.is_empty() || b.is_empty() {
            prop_assert!(!a.intersects(&b));
        }
    }

    #[test]
    fn intersects_iff_common_point((a, b) in small_roi_pair()) {
        // Brute force over a window covering every small ROI: a common point
        // exists <=> intersects.
        let window = -12i64..20;
        let common = if a.dims() == 1 {
            window.clone().any(|x| {
                let p = Coordinate::new([x]);
                a.contains_point(&p) && b.contains_point(&p)
            })
        } else {
            window.clone().any(|x| {
                window.clone().any(|y| {
                    let p = Coordinate::new([x, y]);
                    a.contains_point(&p) && b.contains_point(&p)
                })
            })
        };
        prop_assert_eq!(common, a.intersects(&b));
    }

    #[test]
    fn union_contains_both((a, b) in roi_pair()) {
        let u = a.union(&b);
        // An empty ROI is only "contained" if its begin is inside (funlib), so
        // the property is about non-empty inputs.
        if !a.is_empty() {
            prop_assert!(u.contains(&a));
        }
        if !b.is_empty() {
            prop_assert!(u.contains(&b));
        }
        if a.is_empty() {
            prop_assert_eq!(&u, &b);
        } else if b.is_empty() {
            prop_assert_eq!(&u, &a);
        }
        // Commutative unless both are empty (then the first-empty rule picks `b`).
        if !(a.is_empty() && b.is_empty()) {
            prop_assert_eq!(u, b.union(&a));
        }
    }

    #[test]
    fn snap_grow_contains_input_and_is_aligned((r, v) in roi_voxel()) {
        let g = r.snap_to_grid(&v, Snap::Grow);
        prop_assert!(g.begin().is_multiple_of(&v));
        prop_assert!(g.end().is_multiple_of(&v));
        if !r.is_empty() {
            prop_assert!(g.contains(&r));
            // Minimal: shrinking by one voxel on either side loses containment.
            for d in 0..r.dims() {
                prop_assert!(g.begin()[d] + v[d] > r.begin()[d]);
                prop_assert!(g.end()[d] - v[d] < r.end()[d]);
            }
        }
    }

    #[test]
    fn snap_shrink_is_contained_and_aligned((r, v) in roi_voxel()) {
        let s = r.snap_to_grid(&v, Snap::Shrink);
        prop_assert!(s.begin().is_multiple_of(&v));
        prop_assert!(s.end().is_multiple_of(&v));
        if !s.is_empty() {
            prop_assert!(r.contains(&s));
        }
    }

    #[test]
    fn snap_closest_is_between_shrink_and_grow((r, v) in roi_voxel()) {
        let c = r.snap_to_grid(&v, Snap::Closest);
        let g = r.snap_to_grid(&v, Snap::Grow);
        let s = r.snap_to_grid(&v, Snap::Shrink);
        prop_assert!(c.begin().is_multiple_of(&v));
        prop_assert!(c.end().is_multiple_of(&v));
        for d in 0..r.dims() {
            prop_assert!(g.begin()[d] <= c.begin()[d] && c.begin()[d] <= s.begin()[d]);
            prop_assert!(s.end()[d] <= c.end()[d] && c.end()[d] <= g.end()[d]);
            // Within half a voxel (halves go down).
            prop_assert!(2 * (c.begin()[d] - r.begin()[d]).abs() <= v[d]);
        }
    }

    #[test]
    fn snap_is_idempotent((r, v) in roi_voxel()) {
        for mode in [Snap::Grow, Snap::Shrink, Snap::Closest] {
            let once = r.snap_to_grid(&v, mode);
            prop_assert_eq!(once.snap_to_grid(&v, mode), once.clone());
            prop_assert_eq!(r.try_snap_to_grid(&v, mode), Ok(once));
        }
    }

    #[test]
    fn grow_then_shrink_roundtrips((r, neg, pos) in roi_grow()) {
        let g = r.grow(neg.clone(), pos.clone());
        prop_assert_eq!(g.begin(), &(r.begin() - &neg));
        prop_assert_eq!(g.end(), r.end() + &pos);
        prop_assert_eq!(g.shrink(neg, pos), r);
    }

    #[test]
    fn shift_and_scale_roundtrip((r, v) in roi_voxel()) {
        prop_assert_eq!(&(&r * &v) / &v, r.clone());
        prop_assert_eq!(&(&r + &v) - &v, r.clone());
        prop_assert_eq!(r.shift(v.clone()), &r + &v);
        prop_assert_eq!((&r * 3) / 3, r.clone());
    }

    #[test]
    fn floor_div_bounds((a, b) in coord_divisor()) {
        let q = a.floor_div(&b);
        for d in 0..a.dims() {
            let (a, b, q) = (a[d], b[d], q[d]);
            // q <= a / b < q + 1, stated without division for either sign of b.
            if b > 0 {
                prop_assert!(q * b <= a && a < (q + 1) * b);
            } else {
                prop_assert!(q * b >= a && a > (q + 1) * b);
            }
        }
    }

    #[test]
    fn ceil_div_bounds((a, b) in coord_divisor()) {
        let q = a.ceil_div(&b);
        for d in 0..a.dims() {
            let (a, b, q) = (a[d], b[d], q[d]);
            // q - 1 < a / b <= q
            if b > 0 {
                prop_assert!((q - 1) * b < a && a <= q * b);
            } else {
                prop_assert!((q - 1) * b > a && a >= q * b);
            }
        }
        // For positive divisors, ceil == funlib's (a + b - 1) // b.
        let pos = b.abs();
        prop_assert_eq!(a.ceil_div(&pos), (&a + &pos - 1).floor_div(&pos));
    }

    #[test]
    fn round_div_between_floor_and_ceil((a, b) in coord_divisor()) {
        let f = a.floor_div(&b);
        let c = a.ceil_div(&b);
        let r = a.round_div(&b);
        for d in 0..a.dims() {
            prop_assert!(f[d] <= r[d] && r[d] <= c[d]);
            // Nearest: |a - r*b| <= |b| / 2, with exact halves rounding down.
            let err = a[d] - r[d] * b[d];
            prop_assert!(2 * err.abs() <= b[d].abs());
            if 2 * err.abs() == b[d].abs() {
                prop_assert_eq!(r[d], f[d]);
            }
        }
        // For positive divisors, round == funlib's (a + (b - 1) // 2) // b.
        let pos = b.abs();
        let funlib = (&a + &(&pos - 1).floor_div(&Coordinate::splat(2, a.dims()))).floor_div(&pos);
        prop_assert_eq!(a.round_div(&pos), funlib);
    }

    #[test]
    fn truncating_div_matches_floor_for_nonnegative((a, b) in coord_divisor()) {
        let a = a.abs();
        let b = b.abs();
        prop_assert_eq!(&a / &b, a.floor_div(&b));
        let t = &(-&a) / &b;
        prop_assert_eq!(t, -a.floor_div(&b)); // truncation is symmetric about 0
    }

    #[test]
    fn try_ops_match_operators((a, b) in coord_pair()) {
        prop_assert_eq!(a.try_add(&b), Ok(&a + &b));
        prop_assert_eq!(a.try_sub(&b), Ok(&a - &b));
        prop_assert_eq!(a.try_mul(&b), Ok(&a * &b));
        if b.iter().all(|x| x != 0) {
            prop_assert_eq!(a.try_div(&b), Ok(&a / &b));
        } else {
            prop_assert!(a.try_div(&b).is_err());
        }
        // All operand forms agree.
        prop_assert_eq!(a.clone() - b.clone(), &a - &b);
        prop_assert_eq!(&a - b.clone(), &a - &b);
        prop_assert_eq!(a.clone() - &b, &a - &b);
    }

    #[test]
    fn serde_roundtrip((r, _v) in roi_voxel()) {
        let json = serde_json::to_string(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Roi = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, r);
    }

    /// Near the `i64` limits the checked forms agree with exact `i128` arithmetic, and the
    /// predicates and `intersect` are exact even for ROIs whose end does not fit.
    #[test]
    fn near_the_limits_checked_forms_are_exact(
        (a, b, neg, pos) in (1usize..=3).prop_flat_map(|d| {
            let edge = || prop_oneof![
                -50i64..50,
                (0i64..100).prop_map(|x| i64::MAX - x),
                (0i64..100).prop_map(|x| i64::MIN + x),
            ];
            let roi = move || (prop::collection::vec(edge(), d), prop::collection::vec(-5i64..120, d))
                .prop_map(|(o, s)| Roi::new(o, s));
            (roi(), roi(), prop::collection::vec(edge(), d), prop::collection::vec(edge(), d))
        })
    ) {
        let fits = |v: i128| i64::try_from(v).is_ok();
        let w = |c: &Coordinate, d: usize| i128::from(c[d]);
        let dims = a.dims();
        let end_fits = |r: &Roi| (0..dims).all(|d| fits(w(r.offset(), d) + w(r.shape(), d)));
        prop_assert_eq!(a.try_end().is_ok(), end_fits(&a));
        prop_assert_eq!(Roi::try_new(a.offset().clone(), a.shape().clone()).is_ok(), end_fits(&a));
        if let Ok(end) = a.try_end() {
            for d in 0..dims {
                prop_assert_eq!(i128::from(end[d]), w(a.offset(), d) + w(a.shape(), d));
            }
        }
        // Predicates against the exact definition.
        let bounds = |r: &Roi, d: usize| (w(r.offset(), d), w(r.offset(), d) + w(r.shape(), d));
        let meets = (0..dims).all(|d| {
            let ((b1, e1), (b2, e2)) = (bounds(&a, d), bounds(&b, d));
            b1.max(b2) < e1.min(e2)
        });
        prop_assert_eq!(a.intersects(&b), meets);
        let i = a.intersect(&b);
        if meets {
            for d in 0..dims {
                let ((b1, e1), (b2, e2)) = (bounds(&a, d), bounds(&b, d));
                prop_assert_eq!(bounds(&i, d), (b1.max(b2), e1.min(e2)));
            }
            prop_assert!(a.contains(&i) && b.contains(&i));
        } else {
            prop_assert!(i.is_empty());
        }
        // try_union: Ok exactly when the bounding box fits.
        if !a.is_empty() && !b.is_empty() {
            let boxed: Vec<(i128, i128)> = (0..dims)
                .map(|d| {
                    let ((b1, e1), (b2, e2)) = (bounds(&a, d), bounds(&b, d));
                    (b1.min(b2), e1.max(e2))
                })
                .collect();
            let ok = boxed.iter().all(|&(lo, hi)| fits(hi - lo) && fits(hi));
            let u = a.try_union(&b);
            prop_assert_eq!(u.is_ok(), ok);
            if let Ok(u) = u {
                for (d, &bx) in boxed.iter().enumerate() {
                    prop_assert_eq!(bounds(&u, d), bx);
                }
            }
        }
        // try_grow: Ok exactly when offset, shape and end fit.
        let grown: Vec<(i128, i128)> = (0..dims)
            .map(|d| {
                let (o, s) = (w(a.offset(), d), w(a.shape(), d));
                let (n, p) = (w(&Coordinate::from(neg.clone()), d), w(&Coordinate::from(pos.clone()), d));
                (o - n, s + n + p)
            })
            .collect();
        let ok = grown.iter().all(|&(o, s)| fits(o) && fits(s) && fits(o + s));
        let g = a.try_grow(neg.clone(), pos.clone());
        prop_assert_eq!(g.is_ok(), ok, "{:?}", g);
        if let Ok(g) = g {
            for (d, &(o, s)) in grown.iter().enumerate() {
                prop_assert_eq!((w(g.offset(), d), w(g.shape(), d)), (o, s));
            }
        }
    }
}

proptest! {
    /// `to_voxels` inverts scaling a voxel ROI by the voxel size, and refuses a world ROI
    /// shifted off the voxel grid.
    #[test]
    fn to_voxels_inverts_scaling(
        (voxels, size) in (1usize..=4).prop_flat_map(|d| (
            (prop::collection::vec(V, d), prop::collection::vec(0i64..100, d))
                .prop_map(|(o, s)| Roi::new(o, s)),
            prop::collection::vec(1i64..20, d).prop_map(Coordinate::from),
        ))
    ) {
        let world = Roi::new(voxels.offset() * &size, voxels.shape() * &size);
        prop_assert_eq!(world.to_voxels(&size), Ok(voxels.clone()));
        if size[0] > 1 {
            let off = world.shift(Coordinate::from(
                (0..world.dims()).map(|d| i64::from(d == 0)).collect::<Vec<_>>(),
            ));
            let is_not_multiple = matches!(
                off.to_voxels(&size),
                Err(super::GeometryError::NotVoxelMultiple { what: "offset", axis: 0, .. })
            );
            prop_assert!(is_not_multiple);
        }
    }
}

#[test]
fn to_voxels_names_what_is_wrong() {
    use super::GeometryError;
    let roi = Roi::new([0, 8], [16, 10]);
    assert_eq!(
        roi.to_voxels(&Coordinate::new([4, 4])),
        Err(GeometryError::NotVoxelMultiple {
            what: "shape",
            axis: 1,
            value: 10,
            voxel_size: 4
        })
    );
    let e = roi.to_voxels(&Coordinate::new([4, 0]));
    assert_eq!(
        e,
        Err(GeometryError::NonPositiveVoxelSize {
            voxel_size: Coordinate::new([4, 0]),
            axis: 1
        })
    );
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("voxel size (4, 0) is not positive in axis 1 (0)".to_owned())
    );
    assert!(matches!(
        roi.to_voxels(&Coordinate::new([-2, 2])),
        Err(GeometryError::NonPositiveVoxelSize { axis: 0, .. })
    ));
    assert!(matches!(
        roi.to_voxels(&Coordinate::new([4])),
        Err(GeometryError::DimsMismatch { .. })
    ));
    // Negative offsets divide exactly too.
    assert_eq!(
        Roi::new([-8], [4]).to_voxels(&Coordinate::new([4])),
        Ok(Roi::new([-2], [1]))
    );
}
