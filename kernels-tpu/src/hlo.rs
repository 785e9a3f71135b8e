//! A typed builder for StableHLO programs in MLIR text form.
//!
//! A [`Builder`] collects the arguments and operations of one
//! `func.func @main`; every operation returns a [`Val`] that carries its
//! tensor type, so shapes are checked while the program is built (a shape
//! mistake is a panic-free `Err` at build time, not an XLA error later).
//! Operations are printed in MLIR's generic form
//! (`%3 = "stablehlo.add"(%1, %2) : (…) -> …`), which every StableHLO
//! parser accepts.

use std::fmt::Write as _;

/// Element types used by the lowerings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum El {
    /// `f32`.
    F32,
    /// `f16`.
    F16,
    /// `bf16`.
    BF16,
    /// `f8E4M3FN`.
    F8E4M3,
    /// `f8E5M2`.
    F8E5M2,
    /// `i1` (predicates).
    Pred,
    /// `i8`.
    I8,
    /// `ui8`.
    U8,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
}

impl El {
    /// MLIR spelling.
    pub fn mlir(self) -> &'static str {
        match self {
            El::F32 => "f32",
            El::F16 => "f16",
            El::BF16 => "bf16",
            El::F8E4M3 => "f8E4M3FN",
            El::F8E5M2 => "f8E5M2",
            El::Pred => "i1",
            El::I8 => "i8",
            El::U8 => "ui8",
            El::I32 => "i32",
            El::I64 => "i64",
        }
    }

    /// Bytes per element (predicates count as one).
    pub fn bytes(self) -> usize {
        match self {
            El::F32 | El::I32 => 4,
            El::F16 | El::BF16 => 2,
            El::I64 => 8,
            El::F8E4M3 | El::F8E5M2 | El::Pred | El::I8 | El::U8 => 1,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, El::F32 | El::F16 | El::BF16 | El::F8E4M3 | El::F8E5M2)
    }
}

/// A ranked tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    /// Dimensions, outermost first (empty: a scalar).
    pub dims: Vec<usize>,
    /// Element type.
    pub el: El,
}

impl Ty {
    /// `tensor<d0 x d1 x … x el>`.
    pub fn new(dims: &[usize], el: El) -> Ty {
        Ty {
            dims: dims.to_vec(),
            el,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// MLIR spelling.
    pub fn mlir(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            let _ = write!(s, "{d}x");
        }
        s.push_str(self.el.mlir());
        s.push('>');
        s
    }
}

/// An SSA value of the program being built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Val {
    name: String,
    /// Its type.
    pub ty: Ty,
}

impl Val {
    /// Dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.ty.dims
    }
}

/// A shape or type mismatch found while building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("StableHLO builder: {0}")]
pub struct BuildError(pub String);

/// Result of a builder call.
pub type BResult<T> = std::result::Result<T, BuildError>;

fn err<T>(msg: impl Into<String>) -> BResult<T> {
    Err(BuildError(msg.into()))
}

fn arr(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    if items.is_empty() {
        "array<i64>".to_string()
    } else {
        format!("array<i64: {}>", items.join(", "))
    }
}

fn list(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// Comparison directions of `stablehlo.compare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl Cmp {
    fn mlir(self) -> &'static str {
        match self {
            Cmp::Eq => "EQ",
            Cmp::Ne => "NE",
            Cmp::Lt => "LT",
            Cmp::Le => "LE",
            Cmp::Gt => "GT",
            Cmp::Ge => "GE",
        }
    }
}

/// The reduction computations used by the lowerings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Sum (init 0).
    Sum,
    /// Maximum (init −∞ for floats, the minimum for integers).
    Max,
}

/// Dimension numbers of `stablehlo.gather`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatherDims {
    /// Output dimensions that are slice dimensions.
    pub offset_dims: Vec<usize>,
    /// Operand dimensions whose slice size 1 is dropped.
    pub collapsed_slice_dims: Vec<usize>,
    /// Operand dimension each index component addresses.
    pub start_index_map: Vec<usize>,
    /// Dimension of the indices holding the index vector.
    pub index_vector_dim: usize,
    /// Size of each slice.
    pub slice_sizes: Vec<usize>,
}

/// Dimension numbers of `stablehlo.scatter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScatterDims {
    /// Update dimensions that are window dimensions.
    pub update_window_dims: Vec<usize>,
    /// Operand dimensions of size 1 not present in the update window.
    pub inserted_window_dims: Vec<usize>,
    /// Operand dimension each index component addresses.
    pub scatter_dims_to_operand_dims: Vec<usize>,
    /// Dimension of the indices holding the index vector.
    pub index_vector_dim: usize,
}

/// Builds one `func.func @main`.
#[derive(Debug, Default)]
pub struct Builder {
    args: Vec<(Ty, Option<usize>)>,
    body: String,
    next: usize,
}

impl Builder {
    /// An empty program.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Add an argument of type `ty`.
    pub fn arg(&mut self, ty: Ty) -> Val {
        let name = format!("%arg{}", self.args.len());
        self.args.push((ty.clone(), None));
        Val { name, ty }
    }

    /// Add an argument that the program may overwrite with result `output`
    /// (input/output aliasing: the caller's buffer is donated).
    pub fn donated_arg(&mut self, ty: Ty, output: usize) -> Val {
        let v = self.arg(ty);
        if let Some(last) = self.args.last_mut() {
            last.1 = Some(output);
        }
        v
    }

    fn fresh(&mut self, ty: Ty) -> Val {
        let name = format!("%{}", self.next);
        self.next += 1;
        Val { name, ty }
    }

    fn emit(&mut self, op: &str, operands: &[&Val], attrs: &str, ty: Ty) -> Val {
        let out = self.fresh(ty);
        let names: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let tys: Vec<String> = operands.iter().map(|v| v.ty.mlir()).collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{attrs}}}")
        };
        let _ = writeln!(
            self.body,
            "    {} = \"stablehlo.{op}\"({}){attrs} : ({}) -> {}",
            out.name,
            names.join(", "),
            tys.join(", "),
            out.ty.mlir()
        );
        out
    }

    /// A tensor of `ty` filled with `value` (printed with `{:e}` for floats).
    pub fn splat(&mut self, ty: Ty, value: f64) -> Val {
        let lit = if ty.el.is_float() {
            if value.is_nan() {
                "0x7FC00000".to_string()
            } else if value == f64::INFINITY {
                "0x7F800000".to_string()
            } else if value == f64::NEG_INFINITY {
                "0xFF800000".to_string()
            } else {
                // MLIR float literals need a decimal point: `5.0e-1`.
                let t = format!("{value:e}");
                match t.find('e') {
                    Some(i) if !t.contains('.') => format!("{}.0{}", &t[..i], &t[i..]),
                    _ => t,
                }
            }
        } else if ty.el == El::Pred {
            if value != 0.0 { "true" } else { "false" }.to_string()
        } else {
            format!("{}", value as i64)
        };
        // Non-finite literals are given as f32 bit patterns; build them in f32.
        if ty.el != El::F32 && ty.el.is_float() && !value.is_finite() {
            let f = self.splat(Ty::new(&ty.dims, El::F32), value);
            return self.convert(&f, ty.el);
        }
        let attr = format!("value = dense<{lit}> : {}", ty.mlir());
        self.emit("constant", &[], &attr, ty)
    }

    /// A scalar constant.
    pub fn scalar(&mut self, el: El, value: f64) -> Val {
        self.splat(Ty::new(&[], el), value)
    }

    /// `iota` along `dim` of a tensor of `ty`.
    pub fn iota(&mut self, ty: Ty, dim: usize) -> BResult<Val> {
        if dim >= ty.dims.len() {
            return err(format!("iota dimension {dim} of rank {}", ty.dims.len()));
        }
        Ok(self.emit("iota", &[], &format!("iota_dimension = {dim} : i64"), ty))
    }

    /// Element type conversion.
    pub fn convert(&mut self, x: &Val, el: El) -> Val {
        if x.ty.el == el {
            return x.clone();
        }
        self.emit("convert", &[x], "", Ty::new(&x.ty.dims, el))
    }

    /// Reinterpret bits. Narrow → wide consumes a trailing dimension of
    /// `wide/narrow` elements; wide → narrow appends one.
    pub fn bitcast(&mut self, x: &Val, el: El) -> BResult<Val> {
        let (a, b) = (x.ty.el.bytes(), el.bytes());
        let mut dims = x.ty.dims.clone();
        if a < b {
            if dims.last() != Some(&(b / a)) {
                return err(format!(
                    "bitcast {} → {} needs a trailing dimension of {}",
                    x.ty.mlir(),
                    el.mlir(),
                    b / a
                ));
            }
            dims.pop();
        } else if a > b {
            dims.push(a / b);
        }
        Ok(self.emit("bitcast_convert", &[x], "", Ty::new(&dims, el)))
    }

    /// Same elements, new dimensions.
    pub fn reshape(&mut self, x: &Val, dims: &[usize]) -> BResult<Val> {
        if dims.iter().product::<usize>() != x.ty.numel() {
            return err(format!("reshape {} to {dims:?}", x.ty.mlir()));
        }
        if dims == x.dims() {
            return Ok(x.clone());
        }
        Ok(self.emit("reshape", &[x], "", Ty::new(dims, x.ty.el)))
    }

    /// Broadcast `x` into `dims`; operand dimension `i` maps to `map[i]`.
    pub fn broadcast(&mut self, x: &Val, dims: &[usize], map: &[usize]) -> BResult<Val> {
        if map.len() != x.dims().len()
            || map
                .iter()
                .zip(x.dims())
                .any(|(&m, &d)| m >= dims.len() || (d != 1 && d != dims[m]))
        {
            return err(format!(
                "broadcast {} to {dims:?} with map {map:?}",
                x.ty.mlir()
            ));
        }
        Ok(self.emit(
            "broadcast_in_dim",
            &[x],
            &format!("broadcast_dimensions = {}", arr(map)),
            Ty::new(dims, x.ty.el),
        ))
    }

    /// Static slice `start..limit` (stride 1) in every dimension.
    pub fn slice(&mut self, x: &Val, start: &[usize], limit: &[usize]) -> BResult<Val> {
        let r = x.dims().len();
        if start.len() != r
            || limit.len() != r
            || start
                .iter()
                .zip(limit)
                .zip(x.dims())
                .any(|((s, l), d)| s > l || l > d)
        {
            return err(format!("slice {} [{start:?}, {limit:?})", x.ty.mlir()));
        }
        let dims: Vec<usize> = start.iter().zip(limit).map(|(s, l)| l - s).collect();
        if dims == x.dims() {
            return Ok(x.clone());
        }
        let ones = vec![1; r];
        Ok(self.emit(
            "slice",
            &[x],
            &format!(
                "start_indices = {}, limit_indices = {}, strides = {}",
                arr(start),
                arr(limit),
                arr(&ones)
            ),
            Ty::new(&dims, x.ty.el),
        ))
    }

    /// Slice of `sizes` starting at the scalar indices `starts` (clamped
    /// into range, as StableHLO does).
    pub fn dynamic_slice(&mut self, x: &Val, starts: &[Val], sizes: &[usize]) -> BResult<Val> {
        if starts.len() != x.dims().len() || sizes.len() != starts.len() {
            return err(format!("dynamic_slice of {} rank mismatch", x.ty.mlir()));
        }
        let mut ops: Vec<&Val> = vec![x];
        ops.extend(starts.iter());
        Ok(self.emit(
            "dynamic_slice",
            &ops,
            &format!("slice_sizes = {}", arr(sizes)),
            Ty::new(sizes, x.ty.el),
        ))
    }

    /// Write `update` into `x` at the scalar indices `starts`.
    pub fn dynamic_update_slice(&mut self, x: &Val, update: &Val, starts: &[Val]) -> BResult<Val> {
        if starts.len() != x.dims().len() || update.ty.el != x.ty.el {
            return err(format!(
                "dynamic_update_slice of {} with {}",
                x.ty.mlir(),
                update.ty.mlir()
            ));
        }
        let mut ops: Vec<&Val> = vec![x, update];
        ops.extend(starts.iter());
        Ok(self.emit("dynamic_update_slice", &ops, "", x.ty.clone()))
    }

    fn binary(&mut self, op: &str, a: &Val, b: &Val) -> BResult<Val> {
        if a.ty != b.ty {
            return err(format!("{op} of {} and {}", a.ty.mlir(), b.ty.mlir()));
        }
        Ok(self.emit(op, &[a, b], "", a.ty.clone()))
    }

    /// `a + b`.
    pub fn add(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("add", a, b)
    }
    /// `a − b`.
    pub fn sub(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("subtract", a, b)
    }
    /// `a · b`.
    pub fn mul(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("multiply", a, b)
    }
    /// `a / b`.
    pub fn div(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("divide", a, b)
    }
    /// `max(a, b)`.
    pub fn max(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("maximum", a, b)
    }
    /// `min(a, b)`.
    pub fn min(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("minimum", a, b)
    }
    /// Bitwise and (logical for predicates).
    pub fn and(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("and", a, b)
    }
    /// Logical right shift.
    pub fn shr(&mut self, a: &Val, b: &Val) -> BResult<Val> {
        self.binary("shift_right_logical", a, b)
    }

    fn unary(&mut self, op: &str, x: &Val) -> Val {
        self.emit(op, &[x], "", x.ty.clone())
    }
    /// `e^x`.
    pub fn exp(&mut self, x: &Val) -> Val {
        self.unary("exponential", x)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&mut self, x: &Val) -> Val {
        self.unary("rsqrt", x)
    }
    /// `−x`.
    pub fn neg(&mut self, x: &Val) -> Val {
        self.unary("negate", x)
    }
    /// `tanh(x)`.
    pub fn tanh(&mut self, x: &Val) -> Val {
        self.unary("tanh", x)
    }
    /// `|x|`.
    pub fn abs(&mut self, x: &Val) -> Val {
        self.unary("abs", x)
    }
    /// Round to nearest, ties away from zero.
    pub fn round_afz(&mut self, x: &Val) -> Val {
        self.unary("round_nearest_afz", x)
    }

    /// An i32 tensor of `dims` holding `values` (row-major; `values` has
    /// `dims`' element count).
    pub fn const_i32(&mut self, dims: &[usize], values: &[i32]) -> Val {
        let ty = Ty::new(dims, El::I32);
        fn nested(dims: &[usize], values: &[i32]) -> String {
            match dims.split_first() {
                None => values.first().map(|v| v.to_string()).unwrap_or_default(),
                Some((&d, rest)) => {
                    let step: usize = rest.iter().product();
                    let items: Vec<String> = (0..d)
                        .map(|i| nested(rest, values.get(i * step..(i + 1) * step).unwrap_or(&[])))
                        .collect();
                    format!("[{}]", items.join(", "))
                }
            }
        }
        let attr = format!("value = dense<{}> : {}", nested(dims, values), ty.mlir());
        self.emit("constant", &[], &attr, ty)
    }

    /// Element-wise comparison (a predicate tensor).
    pub fn compare(&mut self, a: &Val, b: &Val, dir: Cmp) -> BResult<Val> {
        if a.ty != b.ty {
            return err(format!("compare of {} and {}", a.ty.mlir(), b.ty.mlir()));
        }
        Ok(self.emit(
            "compare",
            &[a, b],
            &format!(
                "comparison_direction = #stablehlo<comparison_direction {}>",
                dir.mlir()
            ),
            Ty::new(a.dims(), El::Pred),
        ))
    }

    /// `pred ? a : b`.
    pub fn select(&mut self, pred: &Val, a: &Val, b: &Val) -> BResult<Val> {
        if a.ty != b.ty || pred.dims() != a.dims() || pred.ty.el != El::Pred {
            return err(format!(
                "select {} ? {} : {}",
                pred.ty.mlir(),
                a.ty.mlir(),
                b.ty.mlir()
            ));
        }
        Ok(self.emit("select", &[pred, a, b], "", a.ty.clone()))
    }

    /// Concatenate along `dim`.
    pub fn concatenate(&mut self, xs: &[&Val], dim: usize) -> BResult<Val> {
        let first = match xs.first() {
            Some(f) => f,
            None => return err("concatenate of nothing"),
        };
        let mut dims = first.dims().to_vec();
        if dim >= dims.len() {
            return err("concatenate dimension out of range");
        }
        dims[dim] = 0;
        for x in xs {
            let ok = x.ty.el == first.ty.el
                && x.dims().len() == dims.len()
                && x.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !ok {
                return err(format!(
                    "concatenate {} with {}",
                    first.ty.mlir(),
                    x.ty.mlir()
                ));
            }
            dims[dim] += x.dims()[dim];
        }
        Ok(self.emit(
            "concatenate",
            xs,
            &format!("dimension = {dim} : i64"),
            Ty::new(&dims, first.ty.el),
        ))
    }

    /// Permute dimensions: result dimension `i` is operand dimension `perm[i]`.
    pub fn transpose(&mut self, x: &Val, perm: &[usize]) -> BResult<Val> {
        if perm.len() != x.dims().len() || perm.iter().any(|&p| p >= perm.len()) {
            return err(format!("transpose {} by {perm:?}", x.ty.mlir()));
        }
        let dims: Vec<usize> = perm.iter().map(|&p| x.dims()[p]).collect();
        Ok(self.emit(
            "transpose",
            &[x],
            &format!("permutation = {}", arr(perm)),
            Ty::new(&dims, x.ty.el),
        ))
    }

    /// General dot product. Result dimensions: batch, then `a`'s free
    /// dimensions, then `b`'s. Precision HIGHEST (no reduced-precision
    /// passes for f32 on TPUs); the result element type is `out`.
    pub fn dot_general(
        &mut self,
        a: &Val,
        b: &Val,
        batch: (&[usize], &[usize]),
        contract: (&[usize], &[usize]),
        out: El,
    ) -> BResult<Val> {
        if batch.0.len() != batch.1.len() || contract.0.len() != contract.1.len() {
            return err("dot_general dimension lists differ in length");
        }
        for (x, y) in batch
            .0
            .iter()
            .zip(batch.1)
            .chain(contract.0.iter().zip(contract.1))
        {
            if a.dims().get(*x) != b.dims().get(*y) || a.dims().get(*x).is_none() {
                return err(format!(
                    "dot_general {} · {}: dimension {x} vs {y}",
                    a.ty.mlir(),
                    b.ty.mlir()
                ));
            }
        }
        let mut dims: Vec<usize> = batch.0.iter().map(|&i| a.dims()[i]).collect();
        for (i, &d) in a.dims().iter().enumerate() {
            if !batch.0.contains(&i) && !contract.0.contains(&i) {
                dims.push(d);
            }
        }
        for (i, &d) in b.dims().iter().enumerate() {
            if !batch.1.contains(&i) && !contract.1.contains(&i) {
                dims.push(d);
            }
        }
        let attrs = format!(
            "dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = {}, rhs_batching_dimensions = {}, lhs_contracting_dimensions = {}, rhs_contracting_dimensions = {}>, precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]",
            list(batch.0),
            list(batch.1),
            list(contract.0),
            list(contract.1)
        );
        Ok(self.emit("dot_general", &[a, b], &attrs, Ty::new(&dims, out)))
    }

    /// Reduce `x` over `dims` with `kind`.
    pub fn reduce(&mut self, x: &Val, dims: &[usize], kind: Reduce) -> BResult<Val> {
        if dims.iter().any(|&d| d >= x.dims().len()) {
            return err(format!("reduce {} over {dims:?}", x.ty.mlir()));
        }
        let el = x.ty.el;
        let init_v = match kind {
            Reduce::Sum => 0.0,
            Reduce::Max if el.is_float() => f64::NEG_INFINITY,
            Reduce::Max => match el {
                El::I32 => i32::MIN as f64,
                El::I64 => i64::MIN as f64,
                El::I8 => -128.0,
                _ => 0.0,
            },
        };
        let init = self.scalar(el, init_v);
        let out_dims: Vec<usize> = x
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !dims.contains(i))
            .map(|(_, &d)| d)
            .collect();
        let out = self.fresh(Ty::new(&out_dims, el));
        let st = Ty::new(&[], el).mlir();
        let op = match kind {
            Reduce::Sum => "add",
            Reduce::Max => "maximum",
        };
        let _ = writeln!(
            self.body,
            "    {} = \"stablehlo.reduce\"({}, {}) ({{\n    ^bb0(%ra: {st}, %rb: {st}):\n      %rc = \"stablehlo.{op}\"(%ra, %rb) : ({st}, {st}) -> {st}\n      \"stablehlo.return\"(%rc) : ({st}) -> ()\n    }}) {{dimensions = {}}} : ({}, {st}) -> {}",
            out.name,
            x.name,
            init.name,
            arr(dims),
            x.ty.mlir(),
            out.ty.mlir()
        );
        Ok(out)
    }

    /// `stablehlo.gather` of `x` at `indices` (out-of-range starts are
    /// clamped, as StableHLO specifies); `out_dims` is the result shape.
    pub fn gather(&mut self, x: &Val, indices: &Val, d: &GatherDims, out_dims: &[usize]) -> Val {
        let attrs = format!(
            "dimension_numbers = #stablehlo.gather<offset_dims = {}, collapsed_slice_dims = {}, start_index_map = {}, index_vector_dim = {}>, slice_sizes = {}, indices_are_sorted = false",
            list(&d.offset_dims),
            list(&d.collapsed_slice_dims),
            list(&d.start_index_map),
            d.index_vector_dim,
            arr(&d.slice_sizes)
        );
        self.emit("gather", &[x, indices], &attrs, Ty::new(out_dims, x.ty.el))
    }

    /// `stablehlo.scatter` of `updates` into `x` at `indices`, replacing
    /// (the last update wins where several hit one element; out-of-range
    /// windows are skipped, as StableHLO specifies).
    pub fn scatter(&mut self, x: &Val, indices: &Val, updates: &Val, d: &ScatterDims) -> Val {
        let out = self.fresh(x.ty.clone());
        let st = Ty::new(&[], x.ty.el).mlir();
        let _ = writeln!(
            self.body,
            "    {} = \"stablehlo.scatter\"({}, {}, {}) ({{\n    ^bb0(%sa: {st}, %sb: {st}):\n      \"stablehlo.return\"(%sb) : ({st}) -> ()\n    }}) {{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = {}, inserted_window_dims = {}, scatter_dims_to_operand_dims = {}, index_vector_dim = {}>, indices_are_sorted = false, unique_indices = false}} : ({}, {}, {}) -> {}",
            out.name,
            x.name,
            indices.name,
            updates.name,
            list(&d.update_window_dims),
            list(&d.inserted_window_dims),
            list(&d.scatter_dims_to_operand_dims),
            d.index_vector_dim,
            x.ty.mlir(),
            indices.ty.mlir(),
            updates.ty.mlir(),
            out.ty.mlir()
        );
        out
    }

    /// The finished module returning `results`.
    pub fn finish(self, results: &[&Val]) -> String {
        let mut s = String::from("module @kiln {\n  func.func public @main(");
        let args: Vec<String> = self
            .args
            .iter()
            .enumerate()
            .map(|(i, (ty, alias))| match alias {
                Some(o) => format!("%arg{i}: {} {{tf.aliasing_output = {o} : i32}}", ty.mlir()),
                None => format!("%arg{i}: {}", ty.mlir()),
            })
            .collect();
        s.push_str(&args.join(", "));
        let tys: Vec<String> = results.iter().map(|v| v.ty.mlir()).collect();
        let names: Vec<&str> = results.iter().map(|v| v.name.as_str()).collect();
        let _ = writeln!(s, ") -> ({}) {{", tys.join(", "));
        s.push_str(&self.body);
        let _ = writeln!(
            s,
            "    \"func.return\"({}) : ({}) -> ()\n  }}\n}}",
            names.join(", "),
            tys.join(", ")
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_program_golden() {
        let mut b = Builder::new();
        let x = b.arg(Ty::new(&[2, 3], El::F32));
        let y = b.arg(Ty::new(&[2, 3], El::F32));
        let z = b.add(&x, &y).unwrap();
        let text = b.finish(&[&z]);
        assert_eq!(
            text,
            "module @kiln {\n  func.func public @main(%arg0: tensor<2x3xf32>, %arg1: tensor<2x3xf32>) -> (tensor<2x3xf32>) {\n    %0 = \"stablehlo.add\"(%arg0, %arg1) : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>\n    \"func.return\"(%0) : (tensor<2x3xf32>) -> ()\n  }\n}\n"
        );
    }

    #[test]
    fn typed_ops_check_shapes() {
        let mut b = Builder::new();
        let x = b.arg(Ty::new(&[4, 8], El::F32));
        let y = b.arg(Ty::new(&[8, 4], El::F32));
        assert!(b.add(&x, &y).is_err());
        let d = b
            .dot_general(&x, &y, (&[], &[]), (&[1], &[0]), El::F32)
            .unwrap();
        assert_eq!(d.dims(), &[4, 4]);
        let r = b.reduce(&d, &[1], Reduce::Sum).unwrap();
        assert_eq!(r.dims(), &[4]);
        let bytes = b.arg(Ty::new(&[16, 4], El::U8));
        let f = b.bitcast(&bytes, El::F32).unwrap();
        assert_eq!(f.ty, Ty::new(&[16], El::F32));
        let back = b.bitcast(&f, El::U8).unwrap();
        assert_eq!(back.ty, Ty::new(&[16, 4], El::U8));
        assert!(b.reshape(&f, &[5, 3]).is_err());
        assert!(b.slice(&f, &[2], &[20]).is_err());
        let text = b.finish(&[&r]);
        assert!(text.contains("#stablehlo.dot<lhs_batching_dimensions = [], rhs_batching_dimensions = [], lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]>"));
        assert!(text.contains("\"stablehlo.reduce\"(%0, %1)"));
        assert!(text.contains("dimensions = array<i64: 1>"));
        assert!(text.contains(
            "\"stablehlo.bitcast_convert\"(%arg2) : (tensor<16x4xui8>) -> tensor<16xf32>"
        ));
    }

    #[test]
    fn nested_integer_constants() {
        let mut b = Builder::new();
        let c = b.const_i32(&[2, 2], &[1, 2, 3, 4]);
        let text = b.finish(&[&c]);
        assert!(text.contains("value = dense<[[1, 2], [3, 4]]> : tensor<2x2xi32>"));
    }

    #[test]
    fn constants_and_aliasing() {
        let mut b = Builder::new();
        let x = b.donated_arg(Ty::new(&[4], El::F32), 0);
        let c = b.splat(Ty::new(&[4], El::F32), 0.5);
        let m = b.splat(Ty::new(&[4], El::BF16), f64::NEG_INFINITY);
        let s = b.mul(&x, &c).unwrap();
        let text = b.finish(&[&s, &m]);
        assert!(text.contains("%arg0: tensor<4xf32> {tf.aliasing_output = 0 : i32}"));
        assert!(text.contains("value = dense<5.0e-1> : tensor<4xf32>"));
        assert!(text.contains("value = dense<0xFF800000> : tensor<4xf32>"));
        assert!(text.contains("\"stablehlo.convert\"(%1) : (tensor<4xf32>) -> tensor<4xbf16>"));
    }
}
