//! daisy's block ids: the Cantor number of an n-dimensional block index (funlib.math).

/// The Cantor number of a non-negative n-dimensional index, as daisy computes block ids.
///
/// For one dimension it is the index itself; for `n` dimensions it is
/// `P(n, sum(c)) + cantor(c[..n-1])` with the pyramid volume `P(n, L) = C(L + n - 1, n)`.
/// daisy evaluates `P` in floating point; here it is computed exactly, so the ids agree with
/// daisy's wherever daisy's are exact (index sums below about 2.6e5 in 3D) and stay correct beyond.
/// Returns `None` if an index is negative or the number does not fit in a `u64`.
///
/// ```
/// use blockwise::blocks::cantor_number;
/// assert_eq!(cantor_number(&[1, 1, 1]), Some(14));
/// assert_eq!(cantor_number(&[3, 4, 5]), Some(395));
/// assert_eq!(cantor_number(&[7]), Some(7));
/// ```
#[must_use]
pub fn cantor_number(index: &[i64]) -> Option<u64> {
    let mut total: u128 = 0;
    let mut sum: u128 = 0;
    let mut prefix_sums = [0u128; 64];
    if index.len() > prefix_sums.len() {
        return None;
    }
    for (i, &c) in index.iter().enumerate() {
        if c < 0 {
            return None;
        }
        sum = sum.checked_add(c as u128)?;
        prefix_sums[i] = sum;
    }
    // cantor(c[..n]) = P(n, sum_n) + cantor(c[..n-1]); cantor of one element is the element.
    for n in (1..=index.len()).rev() {
        let l = prefix_sums[n - 1];
        let term = if n == 1 { l } else { pyramid(n as u128, l)? };
        total = total.checked_add(term)?;
    }
    u64::try_from(total).ok()
}

/// `C(l + n - 1, n)`, computed as the running product `v = v * (l + d) / (d + 1)`, exact at
/// every step.
fn pyramid(n: u128, l: u128) -> Option<u128> {
    let mut v: u128 = 1;
    for d in 0..n {
        v = v.checked_mul(l + d)? / (d + 1);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::cantor_number;

    #[test]
    fn daisy_values() {
        let cases: &[(&[i64], u64)] = &[
            (&[0, 0], 0),
            (&[0, 1], 1),
            (&[1, 0], 2),
            (&[0, 2], 3),
            (&[1, 1], 4),
            (&[2, 0], 5),
            (&[2, 2], 12),
            (&[1, 1, 1], 14),
            (&[2, 0, 0], 9),
            (&[0, 0, 2], 4),
            (&[3, 4, 5], 395),
            (&[10, 10, 10], 5180),
            (&[0, 0, 0, 1], 1),
            (&[0, 0, 1, 0], 2),
            (&[0, 1, 0, 0], 3),
            (&[1, 0, 0, 0], 4),
            (&[0, 0, 0, 2], 5),
            (&[9], 9),
        ];
        for (index, id) in cases {
            assert_eq!(cantor_number(index), Some(*id), "index {index:?}");
        }
    }

    #[test]
    fn negative_and_overflow() {
        assert_eq!(cantor_number(&[-1, 0]), None);
        assert_eq!(cantor_number(&[i64::MAX, i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn ids_are_unique_on_a_grid() {
        let mut seen = std::collections::HashSet::new();
        for a in 0..20 {
            for b in 0..20 {
                for c in 0..20 {
                    assert!(seen.insert(cantor_number(&[a, b, c])));
                }
            }
        }
    }
}
