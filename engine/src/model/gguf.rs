//! GGUF model files: a reader over a memory map and a writer.
//!
//! A GGUF file (versions 2 and 3, little-endian) is, in order:
//!
//! 1. the magic `GGUF`, a `u32` version, a `u64` tensor count and a `u64`
//!    metadata entry count;
//! 2. the metadata: for each entry a key (`u64` length + UTF-8 bytes), a `u32`
//!    value type and the value; arrays hold a `u32` element type, a `u64`
//!    element count and the elements;
//! 3. the tensor infos: name, `u32` number of dimensions, the dimensions as
//!    `u64` (innermost first: `dims[0]` is the number of columns), the `u32`
//!    ggml type and a `u64` offset relative to the start of the data section;
//! 4. padding up to `general.alignment` (32 bytes when absent), then the data
//!    section holding every tensor at its (aligned) offset.
//!
//! [`GgufFile`] parses all of that once, checking every count against the
//! bytes actually left before allocating, and never panics on a malformed
//! file: every problem is a [`GgufError`] that names the file and the
//! metadata key or tensor concerned. Tensor data is borrowed straight from the
//! memory map. [`GgufWriter`] produces version 3 files, for synthetic test
//! models and for quantisation tools.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// The four magic bytes that open every GGUF file.
const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor when the file does not
/// set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key that sets the alignment of the data section and the tensors.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// The deepest nesting of arrays inside arrays that the reader accepts.
const MAX_ARRAY_DEPTH: u32 = 8;

/// Metadata value type ids as stored in the file.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// An error reading or writing a GGUF file. Its message starts with the file
/// (for [`GgufWriter`] input errors, `GGUF writer`) and names the metadata key
/// or tensor concerned.
#[derive(Debug)]
pub struct GgufError {
    /// The file: the path it was opened from or written to, or the name given
    /// to [`GgufFile::from_bytes`].
    pub file: String,
    /// What went wrong.
    pub kind: GgufErrorKind,
}

impl GgufError {
    fn new(file: &str, kind: GgufErrorKind) -> Self {
        Self {
            file: file.to_owned(),
            kind,
        }
    }

    fn writer(message: String) -> Self {
        Self::new("GGUF writer", GgufErrorKind::InvalidWrite(message))
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.kind)
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// What went wrong in a [`GgufError`].
#[derive(Debug, thiserror::Error)]
pub enum GgufErrorKind {
    /// The file could not be opened, mapped or written.
    #[error("{action}: {error}")]
    Io {
        /// What was being done ("cannot open", "cannot write", ...).
        action: &'static str,
        /// The operating system's error.
        #[source]
        error: io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with bytes {0:02x?}, not \"GGUF\"")]
    BadMagic(Vec<u8>),
    /// A big-endian GGUF file; only little-endian files are read.
    #[error("big-endian GGUF files are not supported; convert it to little-endian")]
    BigEndian,
    /// A version other than 2 or 3.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends in the middle of something.
    #[error(
        "truncated at byte {offset}: {what} needs {needed} bytes but only {available} are left"
    )]
    Truncated {
        /// Byte offset where the read started.
        offset: u64,
        /// What was being read (names the key or tensor).
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },
    /// A string length or element count larger than the rest of the file
    /// could possibly hold.
    #[error("{what} at byte {offset} claims {count} {unit}, more than the {available} bytes left in the file can hold")]
    CountTooLarge {
        /// Byte offset of the count.
        offset: u64,
        /// What the count is for (names the key or tensor).
        what: String,
        /// The count found.
        count: u64,
        /// "bytes", "elements", "entries" or "tensors".
        unit: &'static str,
        /// Bytes left in the file after the count.
        available: u64,
    },
    /// A metadata value type id this reader does not know.
    #[error("{what} has unknown value type id {type_id}")]
    UnknownValueType {
        /// The value (names the key).
        what: String,
        /// The type id found.
        type_id: u32,
    },
    /// Arrays nested inside arrays more than 8 levels deep.
    #[error("metadata key '{0}' nests arrays more than {MAX_ARRAY_DEPTH} levels deep")]
    NestingTooDeep(String),
    /// A string that is not valid UTF-8 (names the key or tensor).
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(String),
    /// The same metadata key twice.
    #[error("metadata key '{0}' appears more than once")]
    DuplicateKey(String),
    /// A value of a key the reader itself interprets (`general.alignment`)
    /// that has the wrong type or value.
    #[error("metadata key '{key}' {problem}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The same tensor name twice.
    #[error("tensor '{0}' appears more than once")]
    DuplicateTensor(String),
    /// A tensor with more than [`MAX_DIMS`] dimensions.
    #[error("tensor '{tensor}' has {n_dims} dimensions; at most {MAX_DIMS} are supported")]
    TooManyDims {
        /// The tensor name.
        tensor: String,
        /// The number of dimensions found.
        n_dims: u32,
    },
    /// A tensor whose ggml type id is unknown, so its size cannot be computed.
    #[error("tensor '{tensor}' has ggml type id {type_id}, which is not supported")]
    UnknownTensorType {
        /// The tensor name.
        tensor: String,
        /// The type id found.
        type_id: u32,
    },
    /// A quantised tensor whose rows are not a whole number of blocks.
    #[error("tensor '{tensor}' of type {ggml_type} has {cols} columns, not a multiple of its block size {block_size}")]
    PartialBlock {
        /// The tensor name.
        tensor: String,
        /// The tensor's type.
        ggml_type: GgmlType,
        /// Number of columns (`dims[0]`).
        cols: u64,
        /// Elements per block of the type.
        block_size: usize,
    },
    /// A tensor whose element or byte count does not fit in 64 bits (or in
    /// this machine's address space).
    #[error("tensor '{tensor}' with dims {dims:?} of type {ggml_type} is too large to address")]
    TensorSizeOverflow {
        /// The tensor name.
        tensor: String,
        /// The dimensions (GGUF order).
        dims: Vec<u64>,
        /// The tensor's type.
        ggml_type: GgmlType,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor '{tensor}' has offset {offset}, not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor name.
        tensor: String,
        /// The offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose data does not lie inside the file.
    #[error("tensor '{tensor}' data (bytes {start}..{end}) lies outside the file ({file_len} bytes); the file may be truncated")]
    TensorOutOfRange {
        /// The tensor name.
        tensor: String,
        /// Absolute start of the data.
        start: u64,
        /// Absolute end of the data (exclusive).
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// [`GgufWriter`] was given something it cannot write.
    #[error("{0}")]
    InvalidWrite(String),
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool` (one byte).
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array whose elements all have the same type.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, from any integer type when it is not
    /// negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(u64::from(v)),
            Self::U16(v) => Some(u64::from(v)),
            Self::U32(v) => Some(u64::from(v)),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, from any integer type when it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U8(v) => Some(i64::from(v)),
            Self::U16(v) => Some(i64::from(v)),
            Self::U32(v) => Some(i64::from(v)),
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I8(v) => Some(i64::from(v)),
            Self::I16(v) => Some(i64::from(v)),
            Self::I32(v) => Some(i64::from(v)),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a float, from either float type or from an integer that
    /// an `f64` represents exactly (magnitude up to 2^53).
    pub fn as_f64(&self) -> Option<f64> {
        const EXACT: u64 = 1 << 53;
        match *self {
            Self::F32(v) => Some(f64::from(v)),
            Self::F64(v) => Some(v),
            Self::Bool(_) | Self::String(_) | Self::Array(_) => None,
            _ => {
                if let Some(v) = self.as_i64() {
                    (v.unsigned_abs() <= EXACT).then_some(v as f64)
                } else {
                    self.as_u64().filter(|&v| v <= EXACT).map(|v| v as f64)
                }
            }
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array value.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The GGUF name of the value's type (`"u32"`, `"string"`, `"array"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// The type id stored in the file for this value.
    fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => value_type::U8,
            Self::I8(_) => value_type::I8,
            Self::U16(_) => value_type::U16,
            Self::I16(_) => value_type::I16,
            Self::U32(_) => value_type::U32,
            Self::I32(_) => value_type::I32,
            Self::U64(_) => value_type::U64,
            Self::I64(_) => value_type::I64,
            Self::F32(_) => value_type::F32,
            Self::F64(_) => value_type::F64,
            Self::Bool(_) => value_type::BOOL,
            Self::String(_) => value_type::STRING,
            Self::Array(_) => value_type::ARRAY,
        }
    }
}

impl fmt::Display for GgufValue {
    /// Scalars print as themselves, strings quoted, arrays as
    /// `[a, b, c]`, abridged after 8 elements.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Array(items) => {
                const SHOWN: usize = 8;
                write!(f, "[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", ... ({} elements)", items.len())?;
                }
                write!(f, "]")
            }
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for GgufValue {
            fn from(v: $t) -> Self {
                Self::$variant(v)
            }
        })*
    };
}

value_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String,
);

impl From<&str> for GgufValue {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl<T: Into<GgufValue>> From<Vec<T>> for GgufValue {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

/// Defines [`GgmlType`] and its id, name and block-layout tables from one list.
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $elems:literal, $bytes:literal;)*) => {
        /// A ggml tensor element type, with the id stored in GGUF files.
        ///
        /// A row is stored as consecutive blocks of [`GgmlType::block_size`]
        /// elements taking [`GgmlType::type_size`] bytes each; unquantised
        /// types have blocks of one element.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $(
                #[doc = concat!("`", stringify!($variant), "`: ggml type id ", $id, "; ",
                    $elems, " elements in ", $bytes, " bytes per block.")]
                $variant,
            )*
            /// Any other id, including the removed ids 4, 5, 31–33 and 36–38.
            Unknown(u32),
        }

        impl GgmlType {
            /// The type with GGUF/ggml type id `id`.
            pub fn from_id(id: u32) -> Self {
                match id {
                    $($id => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }

            /// The type id stored in GGUF files.
            pub fn id(self) -> u32 {
                match self {
                    $(Self::$variant => $id,)*
                    Self::Unknown(id) => id,
                }
            }

            /// The type's name as GGUF tools print it (`"F32"`, `"Q4_1"`,
            /// ...); `"unknown"` for [`GgmlType::Unknown`].
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)*
                    Self::Unknown(_) => "unknown",
                }
            }

            /// `(elements per block, bytes per block)`; `None` for unknown ids.
            pub fn block_layout(self) -> Option<(usize, usize)> {
                match self {
                    $(Self::$variant => Some(($elems, $bytes)),)*
                    Self::Unknown(_) => None,
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 18;
    Q4_1 = 3, 32, 20;
    Q5_0 = 6, 32, 22;
    Q5_1 = 7, 32, 24;
    Q8_0 = 8, 32, 34;
    Q8_1 = 9, 32, 36;
    Q2_K = 10, 256, 84;
    Q3_K = 11, 256, 110;
    Q4_K = 12, 256, 144;
    Q5_K = 13, 256, 176;
    Q6_K = 14, 256, 210;
    Q8_K = 15, 256, 292;
    IQ2_XXS = 16, 256, 66;
    IQ2_XS = 17, 256, 74;
    IQ3_XXS = 18, 256, 98;
    IQ1_S = 19, 256, 50;
    IQ4_NL = 20, 32, 18;
    IQ3_S = 21, 256, 110;
    IQ2_S = 22, 256, 82;
    IQ4_XS = 23, 256, 136;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 56;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 54;
    TQ2_0 = 35, 256, 66;
    MXFP4 = 39, 32, 17;
    NVFP4 = 40, 64, 36;
    Q1_0 = 41, 128, 18;
}

impl GgmlType {
    /// Elements per block (1 for unquantised types); `None` for unknown ids.
    pub fn block_size(self) -> Option<usize> {
        self.block_layout().map(|(elems, _)| elems)
    }

    /// Bytes per block; `None` for unknown ids.
    pub fn type_size(self) -> Option<usize> {
        self.block_layout().map(|(_, bytes)| bytes)
    }

    /// Whether the type stores elements in multi-element blocks.
    pub fn is_quantized(self) -> bool {
        matches!(self.block_size(), Some(n) if n > 1)
    }

    /// Bytes taken by `n_elements` elements of this type, or `None` when the
    /// type is unknown, `n_elements` is not a whole number of blocks, or the
    /// count overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let (elems, bytes) = self.block_layout()?;
        let elems = elems as u64;
        if !n_elements.is_multiple_of(elems) {
            return None;
        }
        (n_elements / elems).checked_mul(bytes as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(id) => write!(f, "unknown ggml type {id}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Where one tensor lives in a [`GgufFile`] and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name (`"blk.0.attn_q.weight"`).
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` is the innermost, contiguous one
    /// (the number of columns), so a `[rows, cols]` matrix is `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: usize,
}

impl GgufTensorInfo {
    /// Number of elements (the product of the dimensions; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1, |acc, &d| acc.saturating_mul(d))
    }

    /// Number of columns: the innermost dimension, `dims[0]` (1 for a scalar).
    pub fn cols(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of all dimensions but the innermost.
    pub fn rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1, |acc, &d| acc.saturating_mul(d))
    }

    /// The shape in row-major order, outermost first (the reverse of
    /// [`GgufTensorInfo::dims`]): `[rows, cols]` for a matrix.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Bytes per row (`n_bytes / rows`), or `None` for a tensor with no rows.
    pub fn row_bytes(&self) -> Option<usize> {
        let rows = usize::try_from(self.rows()).ok()?;
        self.n_bytes.checked_div(rows)
    }
}

/// The bytes behind a [`GgufFile`].
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// A parsed GGUF file: metadata in file order, tensor infos, and the tensor
/// bytes borrowed from a memory map (or an owned buffer).
pub struct GgufFile {
    name: String,
    path: Option<PathBuf>,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let name = path.display().to_string();
        let io_err = |action, error| GgufError::new(&name, GgufErrorKind::Io { action, error });
        let file = File::open(path).map_err(|e| io_err("cannot open", e))?;
        // SAFETY: the map is read-only and lives as long as `self`. As with
        // every memory-mapped model loader, another process truncating or
        // rewriting the file while it is mapped is outside what can be guarded
        // against; model files are not modified in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err("cannot memory-map", e))?;
        let mut parsed = Self::parse(name, Storage::Mapped(map))?;
        parsed.path = Some(path.to_path_buf());
        Ok(parsed)
    }

    /// Parses a GGUF file held in memory; `name` stands for the file in error
    /// messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(name.to_owned(), Storage::Owned(bytes))
    }

    fn parse(name: String, storage: Storage) -> Result<Self, GgufError> {
        let header = Header::parse(&name, storage.bytes())?;
        let mut metadata_index = HashMap::with_capacity(header.metadata.len());
        for (i, (key, _)) in header.metadata.iter().enumerate() {
            metadata_index.insert(key.clone(), i);
        }
        let mut tensor_index = HashMap::with_capacity(header.tensors.len());
        for (i, info) in header.tensors.iter().enumerate() {
            tensor_index.insert(info.name.clone(), i);
        }
        Ok(Self {
            name,
            path: None,
            storage,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            metadata_index,
            tensors: header.tensors,
            tensor_index,
        })
    }

    /// The name used in messages: the path it was opened from, or the name
    /// given to [`GgufFile::from_bytes`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path it was opened from (`None` for in-memory files).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section and of each tensor, in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset where the data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> usize {
        self.storage.bytes().len()
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        let &i = self.metadata_index.get(key)?;
        self.metadata.get(i).map(|(_, value)| value)
    }

    /// `key` as an unsigned integer (any non-negative integer type).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// `key` as a signed integer (any integer type that fits).
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// `key` as a float (either float type or an exactly representable
    /// integer).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    /// `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// `key` as an array of strings; `None` when absent, not an array, or
    /// when any element is not a string.
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(GgufValue::as_str)
            .collect()
    }

    /// `key` as an array value's elements.
    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.get(key)?.as_array()
    }

    /// `general.architecture` (`"llama"`, `"qwen2"`, ...).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The raw bytes of a tensor of this file (`info.n_bytes` long). Infos
    /// from this file always lie inside it; an info from elsewhere that does
    /// not gives an empty slice.
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> &[u8] {
        let bytes = self.storage.bytes();
        usize::try_from(info.offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(info.n_bytes)?))
            .and_then(|range| bytes.get(range))
            .unwrap_or_default()
    }

    /// The raw bytes of the tensor called `name`.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|info| self.tensor_data(info))
    }
}

/// Everything parsed from the front of the file.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
}

impl Header {
    fn parse(file: &str, bytes: &[u8]) -> Result<Self, GgufError> {
        use GgufErrorKind as K;
        let err = |kind| GgufError::new(file, kind);
        let magic = bytes.get(..4).unwrap_or(bytes);
        if magic != MAGIC {
            return Err(err(K::BadMagic(magic.to_vec())));
        }
        let mut r = Reader {
            file,
            bytes,
            pos: MAGIC.len(),
        };
        let version = r.u32(|| "the version".to_owned())?;
        if version != 2 && version != 3 {
            if matches!(version.swap_bytes(), 2 | 3) {
                return Err(err(K::BigEndian));
            }
            return Err(err(K::UnsupportedVersion(version)));
        }
        let n_tensors_at = r.pos;
        let n_tensors = r.u64(|| "the tensor count".to_owned())?;
        let n_metadata_at = r.pos;
        let n_metadata = r.u64(|| "the metadata entry count".to_owned())?;
        // The smallest metadata entry is a key length, a type and a one-byte
        // value.
        r.check_count(n_metadata, 8 + 4 + 1, n_metadata_at, "entries", || {
            "the metadata entry count".to_owned()
        })?;

        let mut metadata: Vec<(String, GgufValue)> = Vec::new();
        let mut keys = HashSet::new();
        for i in 0..n_metadata {
            let key = r.string(|| format!("the key of metadata entry {i}"))?;
            let type_id = r.u32(|| format!("the type of metadata key '{key}'"))?;
            let value = r.value(type_id, &key, 0)?;
            if !keys.insert(key.clone()) {
                return Err(err(K::DuplicateKey(key)));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, value)) => match value.as_u64() {
                Some(a) if a.is_power_of_two() && a <= u64::from(u32::MAX) => a,
                _ => {
                    return Err(err(K::BadMetadata {
                        key: ALIGNMENT_KEY.to_owned(),
                        problem: format!("must be a u32 power of two, but it is {value}"),
                    }))
                }
            },
        };

        // The smallest tensor info is a name length, a dimension count, a type
        // and an offset.
        r.check_count(n_tensors, 8 + 4 + 4 + 8, n_tensors_at, "tensors", || {
            "the tensor count".to_owned()
        })?;
        let mut tensors: Vec<GgufTensorInfo> = Vec::new();
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(|| format!("the name of tensor {i}"))?;
            let n_dims = r.u32(|| format!("the dimension count of tensor '{name}'"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(err(K::TooManyDims {
                    tensor: name,
                    n_dims,
                }));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(|| format!("dimension {d} of tensor '{name}'"))?);
            }
            let type_id = r.u32(|| format!("the type of tensor '{name}'"))?;
            let offset = r.u64(|| format!("the offset of tensor '{name}'"))?;
            let ggml_type = GgmlType::from_id(type_id);
            let n_bytes = tensor_n_bytes(&name, &dims, ggml_type).map_err(err)?;
            if !offset.is_multiple_of(alignment) {
                return Err(err(K::MisalignedOffset {
                    tensor: name,
                    offset,
                    alignment,
                }));
            }
            if !names.insert(name.clone()) {
                return Err(err(K::DuplicateTensor(name)));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_bytes,
            });
        }

        let file_len = bytes.len() as u64;
        let data_offset = align_up(r.pos as u64, alignment).unwrap_or(u64::MAX);
        for info in &mut tensors {
            let start = data_offset.checked_add(info.offset);
            let end = start.and_then(|s| s.checked_add(info.n_bytes as u64));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => info.offset = start,
                _ => {
                    return Err(err(K::TensorOutOfRange {
                        tensor: info.name.clone(),
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    }))
                }
            }
        }

        Ok(Self {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }
}

/// Bytes of tensor `tensor` with `dims` (GGUF order) of `ggml_type`, checked.
fn tensor_n_bytes(tensor: &str, dims: &[u64], ggml_type: GgmlType) -> Result<usize, GgufErrorKind> {
    let Some((block_size, _)) = ggml_type.block_layout() else {
        return Err(GgufErrorKind::UnknownTensorType {
            tensor: tensor.to_owned(),
            type_id: ggml_type.id(),
        });
    };
    let overflow = || GgufErrorKind::TensorSizeOverflow {
        tensor: tensor.to_owned(),
        dims: dims.to_vec(),
        ggml_type,
    };
    let cols = dims.first().copied().unwrap_or(1);
    if !cols.is_multiple_of(block_size as u64) {
        return Err(GgufErrorKind::PartialBlock {
            tensor: tensor.to_owned(),
            ggml_type,
            cols,
            block_size,
        });
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(overflow)?;
    usize::try_from(n_bytes).map_err(|_| overflow())
}

/// `value` rounded up to a multiple of `alignment` (a power of two).
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// A bounds-checked little-endian cursor over the file's bytes.
struct Reader<'a> {
    file: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn err(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(self.file, kind)
    }

    /// The next `n` bytes; `what` describes them for the error.
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(GgufErrorKind::Truncated {
                offset: self.pos as u64,
                what: what(),
                needed: n as u64,
                available: self.remaining() as u64,
            })),
        }
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in the
    /// rest of the file; `count_at` is where the count was read.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        count_at: usize,
        unit: &'static str,
        what: impl FnOnce() -> String,
    ) -> Result<(), GgufError> {
        let available = self.remaining() as u64;
        if count > available / min_size.max(1) {
            return Err(self.err(GgufErrorKind::CountTooLarge {
                offset: count_at as u64,
                what: what(),
                count,
                unit,
                available,
            }));
        }
        Ok(())
    }

    /// A `u64` length followed by that many bytes of UTF-8.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len_at = self.pos;
        let len = self.u64(|| format!("the length of {}", what()))?;
        self.check_count(len, 1, len_at, "bytes", || {
            format!("the length of {}", what())
        })?;
        let raw = self.take(len as usize, &what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err(GgufErrorKind::InvalidUtf8(what())))
    }

    /// A value of type `type_id` belonging to metadata key `key`, `depth`
    /// arrays deep.
    fn value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<GgufValue, GgufError> {
        use value_type as t;
        let what = || format!("the value of metadata key '{key}'");
        Ok(match type_id {
            t::U8 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            t::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            t::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            t::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            t::U32 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            t::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            t::U64 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            t::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            t::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            t::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            t::BOOL => GgufValue::Bool(u8::from_le_bytes(self.array(what)?) != 0),
            t::STRING => GgufValue::String(self.string(what)?),
            t::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(GgufErrorKind::NestingTooDeep(key.to_owned())));
                }
                let elem_type = self.u32(|| format!("the element type of metadata key '{key}'"))?;
                let Some(min_size) = min_value_size(elem_type) else {
                    return Err(self.err(GgufErrorKind::UnknownValueType {
                        what: format!("an element of metadata key '{key}'"),
                        type_id: elem_type,
                    }));
                };
                let count_at = self.pos;
                let count = self.u64(|| format!("the element count of metadata key '{key}'"))?;
                self.check_count(count, min_size, count_at, "elements", || {
                    format!("the array under metadata key '{key}'")
                })?;
                // `check_count` bounds `count` by the bytes left, so this
                // allocation is at most a small multiple of the file size.
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            other => {
                return Err(self.err(GgufErrorKind::UnknownValueType {
                    what: format!("metadata key '{key}'"),
                    type_id: other,
                }))
            }
        })
    }
}

/// The fewest bytes a value of type `type_id` can take; `None` for unknown
/// types.
fn min_value_size(type_id: u32) -> Option<u64> {
    use value_type as t;
    Some(match type_id {
        t::U8 | t::I8 | t::BOOL => 1,
        t::U16 | t::I16 => 2,
        t::U32 | t::I32 | t::F32 => 4,
        t::U64 | t::I64 | t::F64 => 8,
        t::STRING => 8,
        t::ARRAY => 4 + 8,
        _ => return None,
    })
}

/// A tensor waiting to be written.
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF version 3 file: metadata in insertion order, then tensors in
/// insertion order, each at an offset aligned to `general.alignment` (32 bytes
/// unless set with [`GgufWriter::set_alignment`]).
///
/// ```
/// use kiln::model::gguf::{GgmlType, GgufFile, GgufWriter};
///
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", "llama")?;
/// let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// w.add_tensor("norm.weight", &[2], GgmlType::F32, data)?;
/// let file = GgufFile::from_bytes("tiny.gguf", w.to_bytes()?)?;
/// assert_eq!(file.architecture(), Some("llama"));
/// # Ok::<(), kiln::model::gguf::GgufError>(())
/// ```
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufWriter")
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors, alignment 32.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata entry. Fails if `key` is already present, if an array
    /// (at any depth) mixes element types, or if `general.alignment` is not a
    /// `u32` power of two.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<GgufValue>,
    ) -> Result<&mut Self, GgufError> {
        let key = key.into();
        let value = value.into();
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::writer(format!(
                "metadata key '{key}' added twice"
            )));
        }
        check_homogeneous(&key, &value)?;
        if key == ALIGNMENT_KEY {
            match value {
                GgufValue::U32(a) if a.is_power_of_two() => {}
                _ => {
                    return Err(GgufError::writer(format!(
                        "{ALIGNMENT_KEY} must be a u32 power of two, got {value} ({})",
                        value.type_name()
                    )))
                }
            }
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Sets `general.alignment` (a power of two, in bytes), replacing any
    /// earlier value.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufError> {
        if !alignment.is_power_of_two() {
            return Err(GgufError::writer(format!(
                "{ALIGNMENT_KEY} must be a power of two, got {alignment}"
            )));
        }
        self.metadata.retain(|(k, _)| k != ALIGNMENT_KEY);
        self.metadata
            .push((ALIGNMENT_KEY.to_owned(), GgufValue::U32(alignment)));
        Ok(self)
    }

    /// The alignment the file will be written with, in bytes.
    pub fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Adds a tensor with `dims` in GGUF order (`dims[0]` = columns) and its
    /// raw bytes, which must be exactly the size `dims` and `ggml_type` imply.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::writer(format!("tensor '{name}' added twice")));
        }
        if dims.len() > MAX_DIMS {
            return Err(GgufError::writer(format!(
                "tensor '{name}' has {} dimensions; at most {MAX_DIMS} are supported",
                dims.len()
            )));
        }
        let expected =
            tensor_n_bytes(&name, dims, ggml_type).map_err(|e| GgufError::writer(e.to_string()))?;
        if data.len() != expected {
            return Err(GgufError::writer(format!(
                "tensor '{name}' with dims {dims:?} of type {ggml_type} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(self)
    }

    /// Writes the file to `out`.
    pub fn write_to<W: Write>(&self, out: &mut W) -> Result<(), GgufError> {
        self.write_inner(out).map_err(|error| {
            GgufError::new(
                "GGUF writer",
                GgufErrorKind::Io {
                    action: "cannot write",
                    error,
                },
            )
        })
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `path`, replacing any file there.
    pub fn write_file(&self, path: &Path) -> Result<(), GgufError> {
        let io_err = |action, error| {
            GgufError::new(
                &path.display().to_string(),
                GgufErrorKind::Io { action, error },
            )
        };
        let file = File::create(path).map_err(|e| io_err("cannot create", e))?;
        let mut out = io::BufWriter::new(file);
        self.write_inner(&mut out)
            .and_then(|()| out.flush())
            .map_err(|e| io_err("cannot write", e))
    }

    fn write_inner<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let alignment = self.alignment();
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_string(&mut header, key);
            header.extend_from_slice(&value.type_id().to_le_bytes());
            encode_value(&mut header, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            encode_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = padded_len(offset + t.data.len() as u64, alignment)?;
        }
        out.write_all(&header)?;
        let header_len = header.len() as u64;
        write_zeros(out, padded_len(header_len, alignment)? - header_len)?;
        for t in &self.tensors {
            out.write_all(&t.data)?;
            let len = t.data.len() as u64;
            write_zeros(out, padded_len(len, alignment)? - len)?;
        }
        Ok(())
    }
}

/// `len` rounded up to a multiple of `alignment`, as an I/O error on overflow.
fn padded_len(len: u64, alignment: u64) -> io::Result<u64> {
    align_up(len, alignment)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file size overflows u64"))
}

fn write_zeros<W: Write>(out: &mut W, n: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(n), out).map(|_| ())
}

/// Fails if any array in `value` mixes element types.
fn check_homogeneous(key: &str, value: &GgufValue) -> Result<(), GgufError> {
    if let GgufValue::Array(items) = value {
        if let Some(first) = items.first() {
            if let Some(odd) = items.iter().find(|v| v.type_id() != first.type_id()) {
                return Err(GgufError::writer(format!(
                    "metadata key '{key}' mixes {} and {} elements in one array",
                    first.type_name(),
                    odd.type_name()
                )));
            }
        }
        for item in items {
            check_homogeneous(key, item)?;
        }
    }
    Ok(())
}

fn encode_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `value` (without its type id).
fn encode_value(buf: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => buf.push(u8::from(*v)),
        GgufValue::String(s) => encode_string(buf, s),
        GgufValue::Array(items) => {
            // An empty array has no element to take the type from; any type
            // reads back as the same empty array.
            let elem_type = items.first().map_or(value_type::U8, GgufValue::type_id);
            buf.extend_from_slice(&elem_type.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode_value(buf, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small file with every value type, nested arrays and three tensors.
    fn sample_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "llama").unwrap();
        w.add_metadata("t.u8", 7u8).unwrap();
        w.add_metadata("t.i8", -7i8).unwrap();
        w.add_metadata("t.u16", 700u16).unwrap();
        w.add_metadata("t.i16", -700i16).unwrap();
        w.add_metadata("t.u32", 70_000u32).unwrap();
        w.add_metadata("t.i32", -70_000i32).unwrap();
        w.add_metadata("t.u64", 1u64 << 40).unwrap();
        w.add_metadata("t.i64", -(1i64 << 40)).unwrap();
        w.add_metadata("t.f32", 1.5f32).unwrap();
        w.add_metadata("t.f64", -2.25f64).unwrap();
        w.add_metadata("t.bool", true).unwrap();
        w.add_metadata("t.str", "héllo").unwrap();
        w.add_metadata("t.strs", vec!["a", "bc", ""]).unwrap();
        w.add_metadata("t.ints", vec![1i32, -2, 3]).unwrap();
        w.add_metadata("t.empty", GgufValue::Array(vec![])).unwrap();
        w.add_metadata(
            "t.nested",
            GgufValue::Array(vec![
                GgufValue::from(vec![1u8, 2]),
                GgufValue::from(vec![3u8]),
            ]),
        )
        .unwrap();
        let f32_data: Vec<u8> = (0..6u8).flat_map(|i| f32::from(i).to_le_bytes()).collect();
        w.add_tensor("a.weight", &[3, 2], GgmlType::F32, f32_data)
            .unwrap();
        w.add_tensor("b.weight", &[32, 2], GgmlType::Q4_1, (0..40).collect())
            .unwrap();
        w.add_tensor("c.bias", &[5], GgmlType::F16, vec![9; 10])
            .unwrap();
        w
    }

    #[test]
    fn round_trip_keeps_metadata_and_tensor_bytes() {
        let w = sample_writer();
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::from_bytes("sample.gguf", bytes).unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.metadata(), &w.metadata[..]);
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.get_u64("t.u8"), Some(7));
        assert_eq!(f.get_i64("t.i8"), Some(-7));
        assert_eq!(f.get_u64("t.i8"), None);
        assert_eq!(f.get_u64("t.u64"), Some(1 << 40));
        assert_eq!(f.get_f64("t.f32"), Some(1.5));
        assert_eq!(f.get_f64("t.u32"), Some(70_000.0));
        assert_eq!(f.get_bool("t.bool"), Some(true));
        assert_eq!(f.get_str("t.str"), Some("héllo"));
        assert_eq!(f.get_str_array("t.strs"), Some(vec!["a", "bc", ""]));
        assert_eq!(f.get_str_array("t.ints"), None);
        assert_eq!(f.get_array("t.empty").map(<[_]>::len), Some(0));
        assert_eq!(f.get("missing"), None);

        assert_eq!(f.tensors().len(), 3);
        for (info, pending) in f.tensors().iter().zip(&w.tensors) {
            assert_eq!(info.name, pending.name);
            assert_eq!(info.dims, pending.dims);
            assert_eq!(info.ggml_type, pending.ggml_type);
            assert!(info.offset.is_multiple_of(32));
            assert_eq!(f.tensor_data(info), &pending.data[..]);
        }
        let b = f.tensor("b.weight").unwrap();
        assert_eq!((b.rows(), b.cols(), b.n_bytes), (2, 32, 40));
        assert_eq!(b.shape(), vec![2, 32]);
        assert_eq!(b.row_bytes(), Some(20));
        assert_eq!(f.tensor_bytes("c.bias"), Some(&[9u8; 10][..]));
    }

    #[test]
    fn alignment_is_honoured() {
        let mut w = sample_writer();
        w.set_alignment(64).unwrap();
        let f = GgufFile::from_bytes("aligned.gguf", w.to_bytes().unwrap()).unwrap();
        assert_eq!(f.alignment(), 64);
        assert!(f.data_offset().is_multiple_of(64));
        assert!(f.tensors().iter().all(|t| t.offset.is_multiple_of(64)));
        assert!(w.set_alignment(48).is_err());
        assert!(GgufWriter::new()
            .add_metadata(ALIGNMENT_KEY, 64u64)
            .is_err());
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", 1u32).unwrap();
        assert!(w.add_metadata("k", 2u32).is_err());
        let mixed = GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]);
        assert!(w.add_metadata("mixed", mixed).is_err());
        assert!(w.add_tensor("t", &[4], GgmlType::F32, vec![0; 15]).is_err());
        assert!(w
            .add_tensor("q", &[16], GgmlType::Q8_0, vec![0; 17])
            .is_err());
        assert!(w
            .add_tensor("u", &[4], GgmlType::Unknown(99), vec![0; 4])
            .is_err());
        w.add_tensor("t", &[4], GgmlType::F32, vec![0; 16]).unwrap();
        assert!(w.add_tensor("t", &[4], GgmlType::F32, vec![0; 16]).is_err());
    }

    #[test]
    fn ggml_type_table() {
        for id in 0..64 {
            let t = GgmlType::from_id(id);
            assert_eq!(t.id(), id);
        }
        assert_eq!(GgmlType::Q4_0.block_layout(), Some((32, 18)));
        assert_eq!(GgmlType::Q4_1.block_layout(), Some((32, 20)));
        assert_eq!(GgmlType::Q8_0.block_layout(), Some((32, 34)));
        assert_eq!(GgmlType::Q6_K.block_layout(), Some((256, 210)));
        assert_eq!(GgmlType::BF16.name(), "BF16");
        assert_eq!(GgmlType::from_id(31), GgmlType::Unknown(31));
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_1.bytes_for(48), None);
        assert!(GgmlType::Q4_K.is_quantized() && !GgmlType::F16.is_quantized());
    }

    #[test]
    fn gguf_file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<GgufFile>();
    }

    #[test]
    fn value_conversions() {
        assert_eq!(GgufValue::I32(-1).as_u64(), None);
        assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(GgufValue::U64(5).as_i64(), Some(5));
        assert_eq!(GgufValue::U64(u64::MAX).as_f64(), None);
        assert_eq!(GgufValue::from("x").as_str(), Some("x"));
        assert_eq!(GgufValue::from("x").as_u64(), None);
        assert_eq!(GgufValue::from(vec![1u8]).type_name(), "array");
        assert_eq!(
            GgufValue::from(vec![1u32, 2]).to_string(),
            "[1, 2]".to_owned()
        );
    }

    /// End of the last tensor's data in a valid file.
    fn data_end(bytes: &[u8]) -> usize {
        let f = GgufFile::from_bytes("x", bytes.to_vec()).unwrap();
        let ends = f.tensors().iter().map(|t| t.offset as usize + t.n_bytes);
        ends.max().unwrap()
    }

    fn err_of(bytes: Vec<u8>) -> String {
        GgufFile::from_bytes("bad.gguf", bytes)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn header_errors_name_the_file_and_problem() {
        let good = sample_writer().to_bytes().unwrap();

        let e = err_of(b"GGML\x03\0\0\0".to_vec());
        assert!(
            e.contains("bad.gguf") && e.contains("not a GGUF file"),
            "{e}"
        );

        let mut v1 = good.clone();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(err_of(v1).contains("version 1 is not supported"));

        let mut be = good.clone();
        be[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(err_of(be).contains("big-endian"));

        let e = err_of(good[..data_end(&good) - 1].to_vec());
        assert!(
            e.contains("tensor 'c.bias'") && e.contains("outside the file"),
            "{e}"
        );

        let mut kv = Vec::new();
        encode_string(&mut kv, "k");
        kv.extend_from_slice(&value_type::U64.to_le_bytes());
        kv.extend_from_slice(&7u64.to_le_bytes());
        let cut = assemble(1, &kv, 0, &[], 0)[..24 + 9 + 4 + 3].to_vec();
        let e = err_of(cut);
        assert!(
            e.contains("truncated at byte 37: the value of metadata key 'k' needs 8 bytes"),
            "{e}"
        );

        // Metadata count far beyond what the file could hold.
        let mut huge = good.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err_of(huge).contains("metadata entry count"));
    }

    /// Offset of the first metadata value after the key `key` and its type.
    fn value_offset(bytes: &[u8], key: &str) -> usize {
        let needle = [&(key.len() as u64).to_le_bytes()[..], key.as_bytes()].concat();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        at + needle.len() + 4
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let good = sample_writer().to_bytes().unwrap();

        let mut s = good.clone();
        let at = value_offset(&s, "t.str");
        s[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let e = err_of(s);
        assert!(e.contains("t.str") && e.contains("claims"), "{e}");

        let mut a = good.clone();
        let at = value_offset(&a, "t.strs") + 4;
        a[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = err_of(a);
        assert!(e.contains("t.strs") && e.contains("elements"), "{e}");

        let mut t = good.clone();
        let at = value_offset(&t, "t.u8") - 4;
        t[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
        let e = err_of(t);
        assert!(
            e.contains("t.u8") && e.contains("unknown value type id 99"),
            "{e}"
        );

        let mut u = good;
        let at = value_offset(&u, "t.str");
        u[at + 8] = 0xff;
        let e = err_of(u);
        assert!(e.contains("t.str") && e.contains("UTF-8"), "{e}");
    }

    /// Hand-assembles a file from a metadata blob and tensor info blob.
    fn assemble(n_kv: u64, kv: &[u8], n_tensors: u64, infos: &[u8], data_len: usize) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&n_tensors.to_le_bytes());
        out.extend_from_slice(&n_kv.to_le_bytes());
        out.extend_from_slice(kv);
        out.extend_from_slice(infos);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.resize(out.len() + data_len, 0);
        out
    }

    fn tensor_info(name: &str, dims: &[u64], type_id: u32, offset: u64) -> Vec<u8> {
        let mut b = Vec::new();
        encode_string(&mut b, name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&type_id.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b
    }

    #[test]
    fn tensor_info_errors() {
        let two = [tensor_info("x", &[4], 0, 0), tensor_info("x", &[4], 0, 32)].concat();
        assert!(err_of(assemble(0, &[], 2, &two, 64)).contains("tensor 'x' appears more than once"));

        let mis = tensor_info("m", &[4], 0, 8);
        assert!(err_of(assemble(0, &[], 1, &mis, 64)).contains("not a multiple of the alignment"));

        let big = tensor_info("big", &[u64::MAX, 4], 0, 0);
        assert!(err_of(assemble(0, &[], 1, &big, 0)).contains("too large to address"));

        let partial = tensor_info("p", &[16, 2], 2, 0);
        assert!(err_of(assemble(0, &[], 1, &partial, 64)).contains("block size 32"));

        let unknown = tensor_info("u", &[16], 31, 0);
        assert!(err_of(assemble(0, &[], 1, &unknown, 64)).contains("ggml type id 31"));

        let dims5 = tensor_info("d", &[1, 1, 1, 1, 1], 0, 0);
        assert!(err_of(assemble(0, &[], 1, &dims5, 64)).contains("5 dimensions"));

        let far = tensor_info("far", &[4], 0, u64::MAX - 31);
        assert!(err_of(assemble(0, &[], 1, &far, 64)).contains("outside the file"));

        let mut kv = Vec::new();
        encode_string(&mut kv, ALIGNMENT_KEY);
        kv.extend_from_slice(&value_type::U32.to_le_bytes());
        kv.extend_from_slice(&24u32.to_le_bytes());
        assert!(err_of(assemble(1, &kv, 0, &[], 0)).contains("power of two"));

        let mut dup = Vec::new();
        for _ in 0..2 {
            encode_string(&mut dup, "k");
            dup.extend_from_slice(&value_type::U8.to_le_bytes());
            dup.push(1);
        }
        assert!(err_of(assemble(2, &dup, 0, &[], 0)).contains("'k' appears more than once"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut kv = Vec::new();
        encode_string(&mut kv, "deep");
        kv.extend_from_slice(&value_type::ARRAY.to_le_bytes());
        for _ in 0..100_000 {
            kv.extend_from_slice(&value_type::ARRAY.to_le_bytes());
            kv.extend_from_slice(&1u64.to_le_bytes());
        }
        let e = err_of(assemble(1, &kv, 0, &[], 0));
        assert!(e.contains("'deep'") && e.contains("levels deep"), "{e}");
    }

    /// xorshift64*: a deterministic generator for the mutation test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn truncated_and_mutated_files_never_panic() {
        let good = sample_writer().to_bytes().unwrap();
        let data_end = data_end(&good);
        for len in 0..good.len() {
            let parsed = GgufFile::from_bytes("cut.gguf", good[..len].to_vec());
            // Only the padding after the last tensor may be cut off.
            assert_eq!(parsed.is_ok(), len >= data_end, "cut at {len}");
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let interesting = [0u8, 1, 2, 8, 9, 0x7f, 0x80, 0xff];
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes[at] = interesting[rng.below(interesting.len())],
                    2 => bytes[at] ^= 1 << rng.below(8),
                    _ => {
                        let end = (at + 8).min(bytes.len());
                        let word = rng.next().to_le_bytes();
                        bytes[at..end].copy_from_slice(&word[..end - at]);
                    }
                }
            }
            if rng.below(8) == 0 {
                bytes.truncate(rng.below(bytes.len() + 1));
            }
            if let Ok(f) = GgufFile::from_bytes("mutated.gguf", bytes) {
                for info in f.tensors() {
                    assert_eq!(f.tensor_data(info).len(), info.n_bytes);
                }
            }
        }
    }

    #[test]
    fn open_reads_a_file_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.gguf");
        sample_writer().write_file(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.path(), Some(path.as_path()));
        assert_eq!(f.tensors().len(), 3);
        let e = GgufFile::open(&dir.path().join("missing.gguf")).unwrap_err();
        assert!(e.to_string().contains("missing.gguf"), "{e}");
    }
}
