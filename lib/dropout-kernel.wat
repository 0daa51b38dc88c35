;; Inverted-dropout scales for random.ts's dropoutScales, four elements at a time (wasm SIMD): element j
;; of a row with key k is `scale` when mix32(k + j * 0x9e3779b9) >>> 8 < threshold, else 0, with mix32
;; Wellons' lowbias32. Compiled by scripts/build-wasm.ts into dropout-kernel.ts; the test suite checks
;; the result against the JavaScript loop element for element.
(module
  (memory (export "memory") 1)
  (func $mix (param $x i32) (result i32)
    (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 16))))
    (local.set $x (i32.mul (local.get $x) (i32.const 0x7feb352d)))
    (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 15))))
    (local.set $x (i32.mul (local.get $x) (i32.const 0x846ca68b)))
    (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 16))))
  ;; keys: `rows` u32 row keys; out: rows * rowSize f32
  (func (export "scales") (param $keys i32) (param $out i32) (param $rows i32) (param $rowSize i32) (param $threshold i32) (param $scale f32)
    (local $r i32) (local $j i32) (local $key i32) (local $p i32) (local $vend i32)
    (local $x v128) (local $h v128) (local $th v128) (local $sc v128)
    (local.set $th (i32x4.splat (local.get $threshold)))
    (local.set $sc (f32x4.splat (local.get $scale)))
    (local.set $p (local.get $out))
    (local.set $vend (i32.and (local.get $rowSize) (i32.const -4)))
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $key (i32.load (i32.add (local.get $keys) (i32.shl (local.get $r) (i32.const 2)))))
        ;; lanes j .. j+3: key + (j + lane) * golden; 0, 1, 2, 3 times 0x9e3779b9 mod 2^32
        (local.set $x (i32x4.add (i32x4.splat (local.get $key)) (v128.const i32x4 0 0x9e3779b9 0x3c6ef372 0xdaa66d2b)))
        (local.set $j (i32.const 0))
        (block $vec_done
          (loop $vec
            (br_if $vec_done (i32.ge_u (local.get $j) (local.get $vend)))
            (local.set $h (v128.xor (local.get $x) (i32x4.shr_u (local.get $x) (i32.const 16))))
            (local.set $h (i32x4.mul (local.get $h) (v128.const i32x4 0x7feb352d 0x7feb352d 0x7feb352d 0x7feb352d)))
            (local.set $h (v128.xor (local.get $h) (i32x4.shr_u (local.get $h) (i32.const 15))))
            (local.set $h (i32x4.mul (local.get $h) (v128.const i32x4 0x846ca68b 0x846ca68b 0x846ca68b 0x846ca68b)))
            (local.set $h (v128.xor (local.get $h) (i32x4.shr_u (local.get $h) (i32.const 16))))
            (v128.store (local.get $p) (v128.and (i32x4.lt_u (i32x4.shr_u (local.get $h) (i32.const 8)) (local.get $th)) (local.get $sc)))
            ;; 4 * 0x9e3779b9 mod 2^32
            (local.set $x (i32x4.add (local.get $x) (v128.const i32x4 0x78dde6e4 0x78dde6e4 0x78dde6e4 0x78dde6e4)))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (local.set $j (i32.add (local.get $j) (i32.const 4)))
            (br $vec)))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $j) (local.get $rowSize)))
            (f32.store (local.get $p)
              (select (local.get $scale) (f32.const 0)
                (i32.lt_u
                  (i32.shr_u (call $mix (i32.add (local.get $key) (i32.mul (local.get $j) (i32.const 0x9e3779b9)))) (i32.const 8))
                  (local.get $threshold))))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $tail)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $row)))))
