//! Export of a model's parameters as [safetensors](https://huggingface.co/docs/safetensors), the
//! format PyTorch, JAX and the Hugging Face tools read.
//!
//! Each float parameter becomes one `F32` tensor named by its module path
//! (`body.mmoe.experts.layers.0.weight`), in burn's layout: a linear layer's weight is
//! `[d_in, d_out]` (transpose it for `torch.nn.Linear`, whose weight is `[d_out, d_in]`). String
//! metadata (the run's config) goes into `__metadata__`.
//!
//! The file is written directly rather than through the `safetensors` crate: that crate turns on
//! a feature of a hash-map crate burn's autodiff and CubeCL share, which would rebuild all of
//! burn. The format is small: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}}` (padded with spaces to a multiple of 8),
//! then the tensors' little-endian bytes, back to back.

use std::{collections::BTreeMap, path::Path};

use burn::{
    module::{Module, ModuleVisitor, Param},
    tensor::Tensor,
};

use crate::TrainError;

/// Collects float parameters by module path.
#[derive(Default)]
struct Collector {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let data = param.transform_for_save().val().into_data();
        let shape = data.shape().to_vec();
        let values = data.convert::<f32>().try_into_vec::<f32>().expect("float parameters convert to f32");
        self.tensors.push((self.path.join("."), shape, values));
    }
}

/// The safetensors bytes of `module`'s float parameters, with `metadata`.
pub fn safetensors_bytes(module: &impl Module, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut collector = Collector::default();
    module.visit(&mut collector);
    tensors_to_safetensors(&collector.tensors, metadata)
}

/// The safetensors bytes of F32 tensors `(name, shape, values)`, with `metadata`.
pub fn tensors_to_safetensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings serialise"));
    }
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let end = offset + 4 * values.len();
        header
            .insert(name.clone(), serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).expect("the header serialises");
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, values) in tensors {
        values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    out
}

/// Writes `module`'s parameters to `path` as safetensors (atomically: temporary file, rename).
pub fn save_safetensors(
    module: &impl Module,
    metadata: &BTreeMap<String, String>,
    path: &Path,
) -> Result<(), TrainError> {
    crate::run_dir::write_atomically(path, &safetensors_bytes(module, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        nn::{Linear, LinearConfig},
        tensor::{Device, TensorData},
    };

    #[derive(Module, Debug)]
    struct Net {
        first: Linear,
        heads: Vec<Linear>,
    }

    /// A reader written from the format's description, independent of the writer.
    fn read(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, &[u8]) {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header padded to 8 bytes");
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        (header.as_object().unwrap().clone(), &bytes[8 + n..])
    }

    fn floats(data: &[u8], [begin, end]: [usize; 2]) -> Vec<f32> {
        data[begin..end].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn tensors_by_module_path_with_their_values() {
        let device = Device::flex();
        let mut net = Net {
            first: LinearConfig::new(2, 3).init(&device),
            heads: vec![LinearConfig::new(3, 1).init(&device), LinearConfig::new(3, 1).with_bias(false).init(&device)],
        };
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, -6.5];
        net.first.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w.to_vec(), [2, 3]), &device));
        let metadata = BTreeMap::from([("config".to_string(), "name = \"x\"".to_string())]);
        let bytes = safetensors_bytes(&net, &metadata);
        let (header, data) = read(&bytes);
        assert_eq!(header["__metadata__"]["config"], "name = \"x\"");
        let names: Vec<&str> = header.keys().map(String::as_str).filter(|k| *k != "__metadata__").collect();
        assert_eq!(names.len(), 5, "{names:?}"); // 2 + 2 + 1 parameters
        let entry = &header["first.weight"];
        assert_eq!(entry["dtype"], "F32");
        assert_eq!(entry["shape"], serde_json::json!([2, 3]));
        let offsets: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone()).unwrap();
        assert_eq!(floats(data, offsets), w.to_vec());
        assert_eq!(header["heads.1.weight"]["shape"], serde_json::json!([3, 1]));
        assert!(header.get("heads.1.bias").is_none() && header.get("heads.0.bias").is_some());
        // offsets tile the data exactly
        let mut spans: Vec<[usize; 2]> =
            names.iter().map(|n| serde_json::from_value(header[*n]["data_offsets"].clone()).unwrap()).collect();
        spans.sort();
        assert_eq!(spans[0][0], 0);
        assert!(spans.windows(2).all(|p| p[0][1] == p[1][0]));
        assert_eq!(spans.last().unwrap()[1], data.len());
        assert_eq!(data.len(), 4 * net.num_params());
    }
}
