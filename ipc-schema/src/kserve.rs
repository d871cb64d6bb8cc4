//! Open Inference Protocol (KServe v2) JSON, the format `sios invoke` speaks.
//!
//! Spec: <https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/>.
//! A request is `{"inputs": [{"name", "datatype", "shape", "data"}]}`; `data` is
//! the row-major elements, flat or nested. A response is
//! `{"model_name", "model_version", "outputs": [...]}` in the same tensor form.
//! BYTES elements are UTF-8 strings in JSON. An output byte string that is not
//! UTF-8 is refused with a clear error rather than silently mangled.

use crate::services::{InferRequest, InferResponse};
use crate::tensor::{DataType, Tensor, TensorData};
use serde_json::{Map, Value, json};

/// Why a KServe JSON document could not be turned into tensors.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KserveError {
    #[error("the request is not valid JSON: {0}")]
    Json(String),
    #[error(
        "the request must be an object with an \"inputs\" array, e.g. {{\"inputs\": [{{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1], \"data\": [0.5]}}]}}"
    )]
    NoInputs,
    #[error("input #{index}: missing or invalid field \"{field}\" ({hint})")]
    Field {
        index: usize,
        field: &'static str,
        hint: &'static str,
    },
    #[error(
        "input `{name}`: unknown datatype \"{datatype}\"; use one of BOOL, UINT8, INT8, INT32, INT64, FP32, FP64, BYTES"
    )]
    Datatype { name: String, datatype: String },
    #[error("input `{name}`: element #{index} ({value}) is not a valid {datatype}")]
    Element {
        name: String,
        index: usize,
        value: String,
        datatype: DataType,
    },
    #[error("output `{name}`: element #{index} is not UTF-8 and cannot be shown as JSON text")]
    NotUtf8 { name: String, index: usize },
}

/// Parses a KServe v2 inference request.
pub fn parse_request(text: &str) -> Result<InferRequest, KserveError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| KserveError::Json(e.to_string()))?;
    let inputs = doc
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or(KserveError::NoInputs)?;
    let inputs = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| parse_tensor(index, input))
        .collect::<Result<Vec<_>, _>>()?;
    let id = doc.get("id").and_then(Value::as_str).map(str::to_owned);
    Ok(InferRequest { id, inputs })
}

/// Parses one tensor object (`{"name", "datatype", "shape", "data"}`).
pub fn parse_tensor(index: usize, value: &Value) -> Result<Tensor, KserveError> {
    let field = |field, hint| KserveError::Field { index, field, hint };
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or(field("name", "a string"))?
        .to_owned();
    let datatype_name = value
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or(field("datatype", "a string such as \"FP32\""))?;
    let datatype =
        DataType::from_protocol_name(datatype_name).ok_or_else(|| KserveError::Datatype {
            name: name.clone(),
            datatype: datatype_name.to_owned(),
        })?;
    let shape = value
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| dims.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or(field("shape", "an array of non-negative integers"))?;
    let data = value
        .get("data")
        .ok_or(field("data", "an array of elements"))?;
    let mut flat = Vec::new();
    flatten(data, &mut flat);

    let element_error = |index: usize, value: &Value| KserveError::Element {
        name: name.clone(),
        index,
        value: value.to_string(),
        datatype,
    };
    let data = if datatype == DataType::Bytes {
        let strings = flat
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(|s| serde_bytes::ByteBuf::from(s.as_bytes().to_vec()))
                    .ok_or_else(|| element_error(i, v))
            })
            .collect::<Result<Vec<_>, _>>()?;
        TensorData::Strings(strings)
    } else {
        let size = datatype.element_size().unwrap_or(1);
        let mut bytes = Vec::with_capacity(flat.len() * size);
        for (i, v) in flat.iter().enumerate() {
            if !push_element(datatype, v, &mut bytes) {
                return Err(element_error(i, v));
            }
        }
        TensorData::Packed(bytes)
    };
    Ok(Tensor {
        name,
        datatype,
        shape,
        data,
    })
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// Appends one JSON element in packed form; false if it does not fit the type.
fn push_element(datatype: DataType, value: &Value, out: &mut Vec<u8>) -> bool {
    fn int<T: TryFrom<i64>>(value: &Value) -> Option<T> {
        value.as_i64().and_then(|v| T::try_from(v).ok())
    }
    match datatype {
        DataType::Bool => value.as_bool().map(|b| out.push(u8::from(b))).is_some(),
        DataType::Uint8 => int::<u8>(value).map(|v| out.push(v)).is_some(),
        DataType::Int8 => int::<i8>(value)
            .map(|v| out.extend(v.to_le_bytes()))
            .is_some(),
        DataType::Int32 => int::<i32>(value)
            .map(|v| out.extend(v.to_le_bytes()))
            .is_some(),
        DataType::Int64 => int::<i64>(value)
            .map(|v| out.extend(v.to_le_bytes()))
            .is_some(),
        // JSON numbers are doubles; casting to f32 rounds to nearest, which is
        // exact for any value that was printed from an f32.
        DataType::Fp32 => value
            .as_f64()
            .map(|v| out.extend((v as f32).to_le_bytes()))
            .is_some(),
        DataType::Fp64 => value
            .as_f64()
            .map(|v| out.extend(v.to_le_bytes()))
            .is_some(),
        DataType::Bytes => false,
    }
}

/// Renders a tensor as a KServe v2 tensor object with flat data.
pub fn tensor_to_json(tensor: &Tensor) -> Result<Value, KserveError> {
    let data: Vec<Value> = match &tensor.data {
        TensorData::Strings(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                std::str::from_utf8(item)
                    .map(|s| Value::String(s.to_owned()))
                    .map_err(|_| KserveError::NotUtf8 {
                        name: tensor.name.clone(),
                        index,
                    })
            })
            .collect::<Result<_, _>>()?,
        TensorData::Packed(_) => packed_to_json(tensor),
    };
    Ok(json!({
        "name": tensor.name,
        "datatype": tensor.datatype.protocol_name(),
        "shape": tensor.shape,
        "data": data,
    }))
}

fn packed_to_json(tensor: &Tensor) -> Vec<Value> {
    fn all<T: crate::tensor::Element + Into<Value>>(tensor: &Tensor) -> Vec<Value> {
        tensor
            .to_elements::<T>()
            .map(|v| v.into_iter().map(Into::into).collect())
            .unwrap_or_default()
    }
    match tensor.datatype {
        DataType::Bool => all::<bool>(tensor),
        DataType::Uint8 => all::<u8>(tensor),
        DataType::Int8 => all::<i8>(tensor),
        DataType::Int32 => all::<i32>(tensor),
        DataType::Int64 => all::<i64>(tensor),
        // serde_json prints an f32 with the shortest text that reads back as the
        // same f32; NaN and infinities have no JSON form and become null.
        DataType::Fp32 => all::<f32>(tensor),
        DataType::Fp64 => all::<f64>(tensor),
        DataType::Bytes => Vec::new(),
    }
}

/// Renders an inference response as KServe v2 JSON.
pub fn response_to_json(response: &InferResponse) -> Result<Value, KserveError> {
    let outputs = response
        .outputs
        .iter()
        .map(tensor_to_json)
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = Map::new();
    doc.insert("model_name".into(), response.model_name.clone().into());
    doc.insert(
        "model_version".into(),
        response.model_version.clone().into(),
    );
    if let Some(id) = &response.id {
        doc.insert("id".into(), id.clone().into());
    }
    if !response.truncated.is_empty() {
        // The protocol's parameters carry only strings, numbers and
        // booleans: one sentence per cut text, in element order.
        let said: Vec<String> = response.truncated.iter().map(|t| t.to_string()).collect();
        let mut parameters = Map::new();
        parameters.insert(TRUNCATED_PARAMETER.into(), said.join("; ").into());
        doc.insert("parameters".into(), parameters.into());
    }
    doc.insert("outputs".into(), outputs.into());
    Ok(Value::Object(doc))
}

/// The response parameter that says which texts the model read only the
/// start of (absent when it read every text whole).
pub const TRUNCATED_PARAMETER: &str = "sios_truncated";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_flat_data_alike() {
        let flat =
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3,4.5]}]}"#;
        let nested =
            r#"{"inputs":[{"name":"x","datatype":"fp32","shape":[2,2],"data":[[1,2],[3,4.5]]}]}"#;
        let a = parse_request(flat).unwrap();
        let b = parse_request(nested).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.inputs[0].to_elements::<f32>().unwrap(),
            vec![1.0, 2.0, 3.0, 4.5]
        );
    }

    #[test]
    fn f32_survives_a_json_round_trip_bit_for_bit() {
        let values = [0.1f32, -1.0e-30, 3.4028235e38, 1.0 / 3.0, -0.0];
        let tensor = Tensor::from_elements("y", vec![5], &values);
        let text = tensor_to_json(&tensor).unwrap().to_string();
        let back = parse_tensor(0, &serde_json::from_str(&text).unwrap()).unwrap();
        let back = back.to_elements::<f32>().unwrap();
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn bad_documents_get_errors_that_say_what_to_fix() {
        assert!(matches!(parse_request("{"), Err(KserveError::Json(_))));
        assert_eq!(parse_request("{}"), Err(KserveError::NoInputs));
        let bad_type = r#"{"inputs":[{"name":"x","datatype":"FLOAT","shape":[1],"data":[1]}]}"#;
        assert!(
            parse_request(bad_type)
                .unwrap_err()
                .to_string()
                .contains("use one of BOOL")
        );
        let out_of_range =
            r#"{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[300]}]}"#;
        assert!(matches!(
            parse_request(out_of_range),
            Err(KserveError::Element { index: 0, .. })
        ));
        let text_as_number =
            r#"{"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":[7]}]}"#;
        assert!(matches!(
            parse_request(text_as_number),
            Err(KserveError::Element { .. })
        ));
    }

    #[test]
    fn a_response_says_which_texts_were_cut_and_only_then() {
        let mut response = InferResponse {
            id: None,
            model_name: "legal".into(),
            model_version: "ab".into(),
            outputs: vec![Tensor::from_elements("p", vec![1], &[0.5f32])],
            truncated: Vec::new(),
        };
        let whole = response_to_json(&response).unwrap();
        assert!(whole.get("parameters").is_none(), "{whole}");
        response.truncated.push(crate::services::Truncation {
            input: "text".into(),
            element: 1,
            chars_read: 614,
            chars_total: 5310,
            max_tokens: 128,
        });
        let cut = response_to_json(&response).unwrap();
        let said = cut["parameters"][TRUNCATED_PARAMETER].as_str().unwrap();
        assert_eq!(
            said,
            "read the first 614 of 5310 characters of `text` element 1 (its model takes at most 128 tokens)"
        );
    }
}
