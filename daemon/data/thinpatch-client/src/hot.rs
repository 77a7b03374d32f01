//! The jump table and hot calls, with subsecond's semantics:
//! - applying a patch REPLACES the whole table (a patch carries every edit made so far);
//! - `call`/`HotFn` look up only the entry function; calls made inside patched code are
//!   ordinary calls, bound by the dynamic loader;
//! - a callable whose size equals a pointer's is taken to BE a function pointer, and that
//!   pointer's value is looked up. So `|| f(&x)` (one captured reference) is never redirected:
//!   capture nothing, more than one word, or pass arguments through [`HotFn::call`].
//! - each entry is recorded the first time it is called (see `entry.rs`), so the listener can
//!   tell the daemon the program's hot entry points.
use std::any::type_name;
use std::collections::HashMap;
use std::mem::{size_of, transmute_copy};
use std::sync::{Arc, RwLock};

use crate::{entry, sys};

/// A patch as the daemon sends it: subsecond's `JumpTable`, with static addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpTable {
    /// Path of the patch library.
    pub lib: String,
    /// Static address of each old function in the program → static address of its new version
    /// in the patch library.
    pub map: Vec<(u64, u64)>,
    /// Static address of `main` in the program.
    pub aslr_reference: u64,
    /// Static address of `main` in the patch library.
    pub new_base_address: u64,
    /// 0 on native targets.
    pub ifunc_count: u64,
    pub(crate) json: String,
}

impl JumpTable {
    /// The table as the JSON object the daemon sent, for example to hand it to
    /// `serde_json::from_str::<subsecond::JumpTable>`.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Read a `jump_table` object from a `patch-ready` event.
    pub(crate) fn from_json(value: &crate::json::Json) -> Result<JumpTable, String> {
        use crate::json::Json;
        let number = |name: &str| {
            value.get(name).and_then(Json::as_u64).ok_or_else(|| format!("the jump table has no number `{name}`"))
        };
        let lib = value.get("lib").and_then(Json::as_str).ok_or("the jump table has no `lib`")?;
        let entries = value.get("map").and_then(Json::entries).ok_or("the jump table has no `map`")?;
        let mut map = Vec::with_capacity(entries.len());
        for (old, new) in entries {
            let old: u64 = old.parse().map_err(|_| format!("the jump table's map has a bad address {old:?}"))?;
            let new = new.as_u64().ok_or_else(|| format!("the jump table's map has a bad address for {old}"))?;
            map.push((old, new));
        }
        Ok(JumpTable {
            lib: lib.to_string(),
            map,
            aslr_reference: number("aslr_reference")?,
            new_base_address: number("new_base_address")?,
            ifunc_count: value.get("ifunc_count").and_then(Json::as_u64).unwrap_or(0),
            json: value.to_json(),
        })
    }
}

/// Runtime address of each original function → runtime address of its newest version.
type Table = HashMap<u64, u64>;

static TABLE: RwLock<Option<Arc<Table>>> = RwLock::new(None);

/// Turn static addresses into runtime ones: slide the program's side by where its `main`
/// really is, and the patch's side by where the patch's `main` was loaded.
pub(crate) fn rebase(table: &JumpTable, program_main: u64, library_main: u64) -> Table {
    let old_slide = program_main.wrapping_sub(table.aslr_reference);
    let new_slide = library_main.wrapping_sub(table.new_base_address);
    table.map.iter().map(|&(old, new)| (old.wrapping_add(old_slide), new.wrapping_add(new_slide))).collect()
}

/// Replace the current table (never merge: each patch holds every edit since the capture).
pub(crate) fn install(table: Table) {
    let table = Arc::new(table);
    match TABLE.write() {
        Ok(mut current) => *current = Some(table),
        // A panic while holding the lock cannot leave the Option half-written.
        Err(poisoned) => *poisoned.into_inner() = Some(table),
    }
}

fn lookup(address: u64) -> Option<u64> {
    let current = match TABLE.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    current?.get(&address).copied()
}

/// Load the patch library and make its table current. Returns the number of entries.
pub(crate) fn apply(table: &JumpTable) -> Result<usize, String> {
    if table.ifunc_count != 0 {
        return Err(format!("the patch has {} ifuncs; only native targets (0) are supported", table.ifunc_count));
    }
    let library = sys::open_library(&table.lib)?;
    let program_main = sys::program_main().ok_or(
        "this program does not export `main`; run the binary that `thinpatch capture` built (it links with --export-dynamic)",
    )?;
    let library_main = sys::library_main(library).ok_or_else(|| format!("the patch {} has no `main` symbol", table.lib))?;
    let rebased = rebase(table, program_main as u64, library_main as u64);
    let count = rebased.len();
    install(rebased);
    Ok(count)
}

/// Something hot-callable: a closure or fn with up to 6 arguments, taken as a tuple.
///
/// [`HotFunction::call_it`] is the function the table is asked about: it is instantiated in
/// the caller's crate for each closure type, so a patch of that crate contains its new version.
pub trait HotFunction<Args, Marker> {
    /// What the function returns.
    type Return;
    /// Call with the arguments unpacked.
    fn call_it(&mut self, args: Args) -> Self::Return;
    /// Treat `self` as a function pointer and call the newest version of what it points to.
    ///
    /// # Safety
    /// `Self` must be a function pointer (its size equals a pointer's).
    unsafe fn call_as_ptr(&mut self, args: Args) -> Self::Return;
}

macro_rules! hot_function {
    ($( ($marker:ident $(, $arg:ident)*) ),* $(,)?) => {$(
        #[doc(hidden)]
        pub struct $marker;

        impl<T, $($arg,)* R> HotFunction<($($arg,)*), $marker> for T
        where
            T: FnMut($($arg),*) -> R,
        {
            type Return = R;

            #[allow(non_snake_case)]
            fn call_it(&mut self, args: ($($arg,)*)) -> R {
                let ($($arg,)*) = args;
                self($($arg),*)
            }

            #[allow(non_snake_case)]
            unsafe fn call_as_ptr(&mut self, args: ($($arg,)*)) -> R {
                // SAFETY (caller): Self is pointer-sized, so copying it out as `fn` is defined.
                let pointer: fn($($arg),*) -> R = unsafe { transmute_copy(&*self) };
                if let Some(newest) = lookup(pointer as usize as u64) {
                    // SAFETY: the table maps a function to a newer version with the same signature.
                    let newest: fn($($arg),*) -> R = unsafe { transmute_copy(&(newest as usize)) };
                    let ($($arg,)*) = args;
                    return newest($($arg),*);
                }
                self.call_it(args)
            }
        }
    )*};
}

hot_function!((Fn0), (Fn1, A), (Fn2, A, B), (Fn3, A, B, C), (Fn4, A, B, C, D), (Fn5, A, B, C, D, E), (Fn6, A, B, C, D, E, G));

/// A function whose newest version is called each time.
///
/// ```
/// fn describe(level: u32, name: &str) -> String {
///     format!("{name} reached level {level}")
/// }
/// let mut hot = thinpatch_client::HotFn::current(describe);
/// assert_eq!(hot.call((3, "ada")), "ada reached level 3");
/// ```
///
/// Arguments that borrow state the caller keeps (a game loop's `&mut world`) fix a lifetime in
/// the `HotFn`'s type, so make it where they are borrowed; it costs nothing:
///
/// ```
/// struct World { frames: u32 }
/// fn update(world: &mut World, dt: f32) { world.frames += (dt * 0.0) as u32 + 1; }
/// let (mut world, dt) = (World { frames: 0 }, 0.016);
/// for _ in 0..3 {
///     thinpatch_client::HotFn::current(update).call((&mut world, dt));   // arguments as a tuple
/// }
/// assert_eq!(world.frames, 3);
/// ```
pub struct HotFn<A, M, F: HotFunction<A, M>> {
    inner: F,
    _marker: std::marker::PhantomData<(A, M)>,
}

impl<A, M, F: HotFunction<A, M>> HotFn<A, M, F> {
    /// Wrap `f`; each [`HotFn::call`] looks up its newest version.
    pub const fn current(f: F) -> Self {
        HotFn { inner: f, _marker: std::marker::PhantomData }
    }

    /// Call the newest version with `args` as a tuple: `()`, `(x,)`, `(x, y)`, ...
    pub fn call(&mut self, args: A) -> F::Return {
        let entry = <F as HotFunction<A, M>>::call_it as fn(&mut F, A) -> F::Return;
        if size_of::<F>() == size_of::<fn()>() {
            // SAFETY: Self is pointer-sized, so copying it out as a word is defined.
            let pointer: usize = unsafe { transmute_copy(&self.inner) };
            entry::note_pointer_sized(pointer as u64, entry as usize as u64, type_name::<F>, type_name::<F::Return>);
            // SAFETY: pointer-sized callables are taken to be fn pointers, as subsecond does.
            return unsafe { self.inner.call_as_ptr(args) };
        }
        entry::note_shim(entry as usize as u64, type_name::<F>, type_name::<F::Return>);
        if let Some(newest) = lookup(entry as usize as u64) {
            // SAFETY: the newest `call_it` of the same closure type has the same signature.
            let newest: fn(&mut F, A) -> F::Return = unsafe { transmute_copy(&(newest as usize)) };
            return newest(&mut self.inner, args);
        }
        self.inner.call_it(args)
    }
}

/// Run the newest version of `f`.
///
/// ```
/// fn tick() -> u32 {
///     1
/// }
/// assert_eq!(thinpatch_client::call(|| tick() + 1), 2);
/// ```
pub fn call<O>(f: impl FnMut() -> O) -> O {
    HotFn::current(f).call(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    // The table is global: tests that install one run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn table(map: Vec<(u64, u64)>, aslr_reference: u64, new_base_address: u64) -> JumpTable {
        JumpTable { lib: "/p.so".into(), map, aslr_reference, new_base_address, ifunc_count: 0, json: String::new() }
    }

    #[test]
    fn rebases_each_side_by_its_own_main() {
        let t = table(vec![(0x1000, 0x20), (0x1800, 0x90)], 0x1200, 0x40);
        let runtime = rebase(&t, 0x5555_0000_1200, 0x7f00_0000_0040);
        assert_eq!(runtime.get(&0x5555_0000_1000), Some(&0x7f00_0000_0020));
        assert_eq!(runtime.get(&0x5555_0000_1800), Some(&0x7f00_0000_0090));
        assert_eq!(runtime.len(), 2);
        // A non-PIE program (no slide) and a library loaded below its static main.
        let runtime = rebase(&t, 0x1200, 0x30);
        assert_eq!(runtime.get(&0x1000), Some(&0x10));
    }

    #[test]
    fn reads_the_daemons_jump_table() {
        let event = crate::json::parse(
            r#"{"lib":"/t/patch-8.so","map":{"4198400":8192,"18446744073709551615":1},"aslr_reference":4196000,"new_base_address":4096,"ifunc_count":0}"#,
        )
        .unwrap();
        let t = JumpTable::from_json(&event).unwrap();
        assert_eq!(t.map, vec![(4198400, 8192), (u64::MAX, 1)]);
        assert_eq!((t.aslr_reference, t.new_base_address, t.lib.as_str()), (4196000, 4096, "/t/patch-8.so"));
        assert_eq!(crate::json::parse(t.json()).unwrap(), event);
        let broken = crate::json::parse(r#"{"lib":"/x","map":{"0x10":1},"aslr_reference":1,"new_base_address":1}"#).unwrap();
        assert!(JumpTable::from_json(&broken).unwrap_err().contains("bad address"));
    }

    fn old_version() -> u32 {
        1
    }
    fn new_version() -> u32 {
        2
    }
    fn shout(name: &str, times: usize) -> String {
        name.to_uppercase().repeat(times)
    }
    fn whisper(name: &str, _times: usize) -> String {
        name.to_lowercase()
    }

    fn entry_of<A, M, F: HotFunction<A, M>>(_: &F) -> u64 {
        <F as HotFunction<A, M>>::call_it as fn(&mut F, A) -> F::Return as usize as u64
    }

    #[test]
    fn fn_pointers_are_looked_up_by_their_own_address() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let old: fn() -> u32 = old_version;
        install(HashMap::new());
        assert_eq!(HotFn::current(old).call(()), 1);
        install(HashMap::from([(old as usize as u64, new_version as fn() -> u32 as usize as u64)]));
        assert_eq!(HotFn::current(old).call(()), 2);
        let two: fn(&str, usize) -> String = shout;
        install(HashMap::from([(two as usize as u64, whisper as fn(&str, usize) -> String as usize as u64)]));
        assert_eq!(HotFn::current(two).call(("Ab", 2)), "ab");
        // The next patch replaces the table: the first redirection is gone.
        assert_eq!(HotFn::current(old).call(()), 1);
        install(HashMap::new());
    }

    #[test]
    fn closures_are_looked_up_by_their_call_shim_only() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        fn replacement(_closure: &mut (u64, u64), _args: ()) -> u64 {
            99
        }
        let (a, b) = (20u64, 22u64);
        let closure = move || a + b; // two words: looked up through its call shim
        let shim = entry_of::<(), Fn0, _>(&closure);
        install(HashMap::new());
        assert_eq!(call(closure), 42);
        install(HashMap::from([(shim, replacement as fn(&mut (u64, u64), ()) -> u64 as usize as u64)]));
        assert_eq!(call(closure), 99);
        // A zero-sized closure has its own shim, not in the table.
        #[allow(clippy::redundant_closure)] // the closure's own type is the point
        let zero_sized = || old_version();
        assert_eq!(call(zero_sized), 1);
        install(HashMap::new());
    }

    #[test]
    fn a_pointer_sized_closure_is_taken_for_a_fn_pointer_and_never_redirected() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let value = 7u64;
        let by_reference = || value + 1; // captures &value: the size of a pointer
        assert_eq!(size_of_val(&by_reference), size_of::<fn()>());
        let shim = entry_of::<(), Fn0, _>(&by_reference);
        fn never(_: &mut (), _: ()) -> u64 {
            0
        }
        install(HashMap::from([(shim, never as fn(&mut (), ()) -> u64 as usize as u64)]));
        assert_eq!(call(by_reference), 8);
        install(HashMap::new());
    }

    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        let t = table(vec![(1, 2)], 1, 1);
        let error = apply(&JumpTable { lib: "/no/such/libpatch-1.so".into(), ..t }).unwrap_err();
        assert!(error.contains("/no/such/libpatch-1.so"), "{error}");
    }
}
