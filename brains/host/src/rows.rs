//! A batch run in parts: split along the first dimension, outputs joined
//! back in order.
//!
//! A model's working memory grows with the rows it runs on at once (a text
//! model's attention with texts × tokens², any model's activations with its
//! rows), and a brain's cgroup caps its memory. Run whole, a request of
//! 500 long texts (1 MB) took the text-embedding brain past its 512 MiB and
//! got it killed; run in parts, the same request costs what one part costs.
//! Only a tokenising model's batch is split (`src/engine.rs` says why): its
//! texts are encoded each on its own, so the parts' outputs, joined, are the
//! batch's outputs (to float rounding: a part may be padded to a shorter
//! length, or summed in another order, than the whole batch).

use sios_ipc::{Tensor, TensorData};

/// The rows of a batch of `tensors` when every one of them is batch-major
/// with the same number of rows, else `None`.
pub fn rows(tensors: &[Tensor]) -> Option<u64> {
    let rows = *tensors.first()?.shape.first()?;
    tensors
        .iter()
        .all(|t| t.shape.first() == Some(&rows))
        .then_some(rows)
}

/// `tensors` cut into parts of at most `per_part` rows, in order; `None`
/// when they are not batch-major alike (see [`rows`]) or fit in one part.
pub fn split(tensors: &[Tensor], per_part: u64) -> Option<Vec<Vec<Tensor>>> {
    let rows = rows(tensors)?;
    let per_part = per_part.max(1);
    if rows <= per_part {
        return None;
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rows {
        let end = (start + per_part).min(rows);
        parts.push(tensors.iter().map(|t| slice(t, start, end, rows)).collect());
        start = end;
    }
    Some(parts)
}

/// Rows `start..end` of `tensor`, which has `rows` rows.
fn slice(tensor: &Tensor, start: u64, end: u64, rows: u64) -> Tensor {
    let mut shape = tensor.shape.clone();
    shape[0] = end - start;
    let data = match &tensor.data {
        TensorData::Packed(bytes) => {
            // Row-major: each row is the same number of bytes.
            let row = bytes.len() / rows as usize;
            TensorData::Packed(bytes[start as usize * row..end as usize * row].to_vec())
        }
        TensorData::Strings(items) => {
            let row = items.len() / rows as usize;
            TensorData::Strings(items[start as usize * row..end as usize * row].to_vec())
        }
    };
    Tensor {
        name: tensor.name.clone(),
        datatype: tensor.datatype,
        shape,
        data,
    }
}

/// The parts' outputs joined along the first dimension, output by output.
/// Every part must have returned the same outputs, alike but for their rows.
pub fn join(parts: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>, String> {
    let mut parts = parts.into_iter();
    let mut joined = parts.next().unwrap_or_default();
    for part in parts {
        if part.len() != joined.len() {
            return Err(format!(
                "one part of the batch gave {} outputs, another {}",
                part.len(),
                joined.len()
            ));
        }
        for (whole, piece) in joined.iter_mut().zip(part) {
            let alike = whole.name == piece.name
                && whole.datatype == piece.datatype
                && whole.shape.len() == piece.shape.len()
                && !whole.shape.is_empty()
                && whole.shape[1..] == piece.shape[1..];
            if !alike {
                return Err(format!(
                    "output `{}` came back as {} {:?} from one part of the batch and {} {:?} from another",
                    whole.name, whole.datatype, whole.shape, piece.datatype, piece.shape
                ));
            }
            whole.shape[0] += piece.shape[0];
            match (&mut whole.data, piece.data) {
                (TensorData::Packed(all), TensorData::Packed(more)) => all.extend(more),
                (TensorData::Strings(all), TensorData::Strings(more)) => all.extend(more),
                _ => {
                    return Err(format!(
                        "output `{}` came back as packed data and as strings",
                        whole.name
                    ));
                }
            }
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_split_and_joined_is_the_batch() {
        let x = Tensor::from_elements("x", vec![5, 2], &[0f32, 1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let names = Tensor::from_strings("n", vec![5], &["a", "b", "c", "d", "e"]);
        let batch = vec![x.clone(), names.clone()];
        assert_eq!(rows(&batch), Some(5));
        assert!(split(&batch, 5).is_none(), "fits in one part");
        let parts = split(&batch, 2).unwrap();
        assert_eq!(
            parts.iter().map(|p| p[0].shape[0]).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(parts[1][0].to_elements::<f32>().unwrap(), [4., 5., 6., 7.]);
        assert_eq!(parts[2][1].strings().unwrap(), [b"e".as_slice()]);
        assert_eq!(join(parts).unwrap(), batch);
        // Not batch-major alike: run whole.
        let scalar = Tensor::from_elements("sr", vec![], &[16000i64]);
        assert!(split(&[x.clone(), scalar], 1).is_none());
        let other_rows = Tensor::from_elements("y", vec![4, 1], &[0f32; 4]);
        assert!(split(&[x.clone(), other_rows], 1).is_none());
        // Parts that disagree are an error, not a silently wrong batch.
        let wide = Tensor::from_elements("x", vec![1, 3], &[0f32; 3]);
        let err = join(vec![vec![x.clone()], vec![wide]]).unwrap_err();
        assert!(err.contains("output `x`"), "{err}");
        assert!(join(vec![vec![x.clone()], vec![]]).is_err());
    }
}
