//! Geometry acceptance values (daisy.md §12 cases 1–5).
use super::*;

#[test]
fn acceptance_values() {
    assert_eq!(Coordinate::from([4, 5, 6]) / 2, Coordinate::from([2, 2, 3]));
    let c = Coordinate::from([10, 15, 25]);
    let d = Coordinate::from([5, 6, 7]);
    assert_eq!(c.floor_div(&d), Coordinate::from([2, 2, 3]));
    assert_eq!(c.round_div(&d), Coordinate::from([2, 2, 4]));
    assert_eq!(c.ceil_div(&d), Coordinate::from([2, 3, 4]));
    assert_eq!(Roi::new([-5], [5]).center(), Coordinate::from([-3]));
    assert!(Roi::new([0], [10]).intersect(&Roi::new([10], [5])).is_empty());
}
