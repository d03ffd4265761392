//! Detection measures over scores and ground truth: AUROC, recall at a false-positive rate,
//! precision at a recall.

/// Area under the ROC curve (Mann–Whitney, ties counted half).
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (np, nn) = (
        v.iter().filter(|x| x.1).count() as f64,
        v.iter().filter(|x| !x.1).count() as f64,
    );
    if np == 0.0 || nn == 0.0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += v[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j + 1;
    }
    Some((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

/// The operating points of `scores`, from the highest threshold down: cumulative (true
/// positives, false positives) after taking every record tied at each distinct score.
pub fn operating_points(scores: &[f64], positive: &[bool]) -> Vec<(usize, usize)> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    for (k, (score, pos)) in v.iter().enumerate() {
        if *pos {
            tp += 1;
        } else {
            fp += 1;
        }
        if v.get(k + 1).is_none_or(|next| next.0 != *score) {
            out.push((tp, fp));
        }
    }
    out
}

/// Recall at the lowest threshold on `scores` whose false-positive rate stays at most `f`.
pub fn recall_at_fpr(scores: &[f64], positive: &[bool], f: f64) -> Option<f64> {
    let np = positive.iter().filter(|p| **p).count();
    let nn = positive.len() - np;
    if np == 0 || nn == 0 {
        return None;
    }
    let best = operating_points(scores, positive)
        .into_iter()
        .take_while(|(_, fp)| *fp as f64 <= f * nn as f64)
        .last()
        .map_or(0, |(tp, _)| tp);
    Some(best as f64 / np as f64)
}

/// Precision at the highest threshold on `scores` that reaches recall `r`.
pub fn precision_at_recall(scores: &[f64], positive: &[bool], r: f64) -> Option<f64> {
    let np = positive.iter().filter(|p| **p).count();
    if np == 0 {
        return None;
    }
    operating_points(scores, positive)
        .into_iter()
        .find(|(tp, _)| *tp as f64 >= r * np as f64)
        .map(|(tp, fp)| tp as f64 / (tp + fp) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_matches_hand_counts() {
        assert_eq!(auroc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // 3 positive/negative pairs of 4 ordered right.
        assert_eq!(auroc(&[0.1, 0.3, 0.2, 0.4], &[false, true, true, false]), Some(0.5));
    }

    #[test]
    fn operating_points_take_ties_together() {
        // Scores 0.9 (pos), 0.5 (pos and neg tied), 0.1 (neg).
        let pts = operating_points(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]);
        assert_eq!(pts, vec![(1, 0), (2, 1), (2, 2)]);
        assert_eq!(
            recall_at_fpr(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false], 0.0),
            Some(0.5)
        );
        assert_eq!(
            precision_at_recall(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false], 1.0),
            Some(2.0 / 3.0)
        );
    }
}
