//! The program's hot entry points: every callable passed to `call`/`HotFn`, recorded the
//! first time it is called, so the listener can tell the daemon where patched code can be
//! reached from (the `entry-points` request).
//!
//! The hot path stays cheap: after an entry's first call, noticing it again is one or two
//! atomic loads in a fixed table, with no lock and no allocation. The first call takes a lock,
//! records the entry and wakes whichever listener sessions are connected; it never does I/O.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::json::quote;

/// At most this many entries are recorded per process (the daemon accepts no more per connection).
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Names longer than this many bytes are cut (the daemon refuses longer ones).
pub(crate) const MAX_NAME_BYTES: usize = 4096;
/// One `entry-points` line stays well below the protocol's 1 MiB line limit.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How an entry is looked up in the jump table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A pointer-sized callable that is a function pointer: looked up by its own value.
    Fn,
    /// Any callable that is not pointer-sized (closures, and fn items, which are zero-sized):
    /// looked up by its `<F as HotFunction<A, M>>::call_it`.
    Closure,
    /// Any other pointer-sized callable: a closure capturing one word (a reference, `Box`,
    /// `usize`…), or a reference or `Box` to a callable. Taken for a function pointer and never
    /// redirected. Reported by its `call_it`.
    PointerSizedClosure,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Fn => "fn",
            Kind::Closure => "closure",
            Kind::PointerSizedClosure => "pointer-sized-closure",
        }
    }

    /// The kind of a callable, from its size and its type's name. At run time a function
    /// pointer and a closure capturing one word look alike; their names do not: a closure's
    /// contains `{{closure}}`, and a function pointer's is `fn(…) -> …` (or `extern "C" fn(…)`).
    pub(crate) fn of(pointer_sized: bool, type_name: &str) -> Kind {
        let fn_pointer = type_name.starts_with("fn(") || type_name.starts_with("extern \"");
        match (pointer_sized, fn_pointer && !type_name.contains("{{closure}}")) {
            (false, _) => Kind::Closure,
            (true, true) => Kind::Fn,
            (true, false) => Kind::PointerSizedClosure,
        }
    }
}

/// One entry point as recorded: its runtime address; the offset from `main` is computed when
/// it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryPoint {
    pub address: u64,
    pub kind: Kind,
    pub name: &'static str,
    pub returns: &'static str,
}

impl EntryPoint {
    /// The entry as a JSON object of the `entry-points` request.
    pub(crate) fn to_json(&self, program_main: u64) -> String {
        let offset = (self.address as i64).wrapping_sub(program_main as i64);
        format!(
            "{{\"offset\":{offset},\"kind\":\"{}\",\"name\":{},\"returns\":{}}}",
            self.kind.as_str(),
            quote(&cut(self.name)),
            quote(&cut(self.returns)),
        )
    }
}

/// `text`, cut at a character boundary to fit [`MAX_NAME_BYTES`] with a trailing `…`.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_NAME_BYTES {
        return text.into();
    }
    let mut end = MAX_NAME_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// `entry-points` request lines (newline-terminated) for `entries`, each line below
/// [`MAX_BATCH_BYTES`]; `next_seq` numbers them.
pub(crate) fn request_lines(entries: &[EntryPoint], program_main: u64, mut next_seq: impl FnMut() -> u64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut size = 0;
    let mut flush = |batch: &mut Vec<String>, lines: &mut Vec<String>| {
        if !batch.is_empty() {
            lines.push(format!("{{\"type\":\"entry-points\",\"seq\":{},\"entries\":[{}]}}\n", next_seq(), batch.join(",")));
            batch.clear();
        }
    };
    for entry in entries {
        let json = entry.to_json(program_main);
        if size + json.len() > MAX_BATCH_BYTES {
            flush(&mut batch, &mut lines);
            size = 0;
        }
        size += json.len() + 1;
        batch.push(json);
    }
    flush(&mut batch, &mut lines);
    lines
}

// ---------------------------------------------------------------- the fast "seen" table

/// Open addressing over runtime addresses (0 = empty). Written only under the registry lock,
/// read without it.
const SLOTS: usize = 8192;
/// Past this many keys the table stops growing and later entries go through the lock.
const MAX_KEYS: usize = SLOTS / 2;
/// Keys are looked for in at most this many consecutive slots.
const MAX_PROBES: usize = 32;

static SEEN: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static KEYS: AtomicUsize = AtomicUsize::new(0);

fn home_slot(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize % SLOTS
}

fn seen(key: u64) -> bool {
    let home = home_slot(key);
    for probe in 0..MAX_PROBES {
        match SEEN[(home + probe) % SLOTS].load(Ordering::Acquire) {
            0 => return false,
            found if found == key => return true,
            _ => {}
        }
    }
    false
}

/// Add `key` to the fast table (the caller holds the registry lock: one writer at a time).
fn remember(key: u64) {
    if key == 0 || KEYS.load(Ordering::Relaxed) >= MAX_KEYS {
        return;
    }
    let home = home_slot(key);
    for probe in 0..MAX_PROBES {
        let slot = &SEEN[(home + probe) % SLOTS];
        match slot.load(Ordering::Relaxed) {
            0 => {
                slot.store(key, Ordering::Release);
                KEYS.fetch_add(1, Ordering::Relaxed);
                return;
            }
            found if found == key => return,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- the registry

struct Registry {
    /// Every recorded entry, in the order of first calls.
    entries: Vec<EntryPoint>,
    /// Every address recorded (also those past the fast table's capacity or MAX_ENTRIES).
    addresses: BTreeSet<u64>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { entries: Vec::new(), addresses: BTreeSet::new() });
/// Notified when an entry is recorded, and by sessions that end.
static CHANGED: Condvar = Condvar::new();

fn registry() -> MutexGuard<'static, Registry> {
    // Recording never panics while holding the lock, but a poisoned lock must not stop us.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A call of a callable that is not pointer-sized: `call_it` is its entry.
#[inline]
pub(crate) fn note_shim(call_it: u64, name: fn() -> &'static str, returns: fn() -> &'static str) {
    if !seen(call_it) {
        record(call_it, Kind::Closure, name(), returns());
    }
}

/// A call of a pointer-sized callable: `pointer` is its value (the fn pointer, or a closure's
/// captured word), `call_it` its shim. Which one is the entry depends on the type's name, so
/// both are looked for: the shim is the key of a pointer-sized closure, the value that of a
/// function pointer.
#[inline]
pub(crate) fn note_pointer_sized(pointer: u64, call_it: u64, name: fn() -> &'static str, returns: fn() -> &'static str) {
    if seen(call_it) || seen(pointer) {
        return;
    }
    let name = name();
    match Kind::of(true, name) {
        Kind::Fn => record(pointer, Kind::Fn, name, returns()),
        kind => record(call_it, kind, name, returns()),
    }
}

#[cold]
#[inline(never)]
fn record(address: u64, kind: Kind, name: &'static str, returns: &'static str) {
    let mut registry = registry();
    remember(address);
    if !registry.addresses.insert(address) || registry.entries.len() >= MAX_ENTRIES {
        return;
    }
    registry.entries.push(EntryPoint { address, kind, name, returns });
    drop(registry);
    CHANGED.notify_all();
}

/// Every entry recorded so far.
#[cfg(test)]
pub(crate) fn recorded() -> Vec<EntryPoint> {
    registry().entries.clone()
}

/// Wait until more than `sent` entries are recorded, or `stop` says to give up (then None).
/// Returns the entries past `sent`.
pub(crate) fn wait_for_new(sent: usize, stop: &std::sync::atomic::AtomicBool) -> Option<Vec<EntryPoint>> {
    let mut registry = registry();
    loop {
        if stop.load(Ordering::Acquire) {
            return None;
        }
        if registry.entries.len() > sent {
            return Some(registry.entries[sent..].to_vec());
        }
        // New entries and stopping sessions notify after changing what is checked above
        // (`wake_all` takes the lock to notify), so no wake-up is missed.
        registry = CHANGED.wait(registry).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

/// Wake every waiting session, so a stopped one can notice and end.
pub(crate) fn wake_all() {
    let _registry = registry();
    CHANGED.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::{call, HotFn, HotFunction};
    use crate::json;
    use std::mem::size_of;

    fn entries_at(address: u64) -> Vec<EntryPoint> {
        recorded().into_iter().filter(|e| e.address == address).collect()
    }

    fn shim_of<A, M, F: HotFunction<A, M>>(_: &F) -> u64 {
        <F as HotFunction<A, M>>::call_it as fn(&mut F, A) -> F::Return as usize as u64
    }

    fn answer() -> u32 {
        42
    }
    fn greet(name: &str, times: usize) -> String {
        name.repeat(times)
    }

    #[test]
    fn a_fn_pointer_is_recorded_by_its_own_value_once() {
        let pointer: fn() -> u32 = answer;
        for _ in 0..3 {
            assert_eq!(HotFn::current(pointer).call(()), 42);
        }
        let found = entries_at(pointer as usize as u64);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].kind, found[0].name, found[0].returns), (Kind::Fn, "fn() -> u32", "u32"));
        let two: fn(&str, usize) -> String = greet;
        HotFn::current(two).call(("ab", 2));
        let found = entries_at(two as usize as u64);
        assert_eq!((found[0].kind, found[0].name, found[0].returns), (Kind::Fn, "fn(&'_ str, usize) -> alloc::string::String", "alloc::string::String"));
    }

    #[test]
    fn a_zero_sized_closure_and_a_fn_item_are_recorded_by_their_call_shim() {
        #[allow(clippy::redundant_closure)] // the closure's own type is the point
        let zero_sized = || answer();
        assert_eq!(size_of_val(&zero_sized), 0);
        let shim = shim_of::<(), crate::hot::Fn0, _>(&zero_sized);
        for _ in 0..5 {
            call(zero_sized);
        }
        let found = entries_at(shim);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, Kind::Closure);
        assert_eq!(found[0].name, "thinpatch_client::entry::tests::a_zero_sized_closure_and_a_fn_item_are_recorded_by_their_call_shim::{{closure}}");
        assert_eq!(found[0].returns, "u32");

        // A fn item is zero-sized too: looked up (and reported) through its shim, not as a pointer.
        assert_eq!(size_of_val(&greet), 0);
        let item_shim = shim_of::<(&str, usize), crate::hot::Fn2, _>(&greet);
        HotFn::current(greet).call(("x", 1));
        let found = entries_at(item_shim);
        assert_eq!((found[0].kind, found[0].name), (Kind::Closure, "thinpatch_client::entry::tests::greet"));
    }

    #[test]
    fn a_two_word_closure_is_a_closure_and_a_one_reference_closure_is_pointer_sized() {
        let (a, b) = (20u64, 22u64);
        let two_words = move || a + b;
        assert_eq!(size_of_val(&two_words), 2 * size_of::<usize>());
        call(two_words);
        let found = entries_at(shim_of::<(), crate::hot::Fn0, _>(&two_words));
        assert_eq!((found.len(), found[0].kind), (1, Kind::Closure));

        let by_reference = || a + 1;
        assert_eq!(size_of_val(&by_reference), size_of::<fn()>());
        let shim = shim_of::<(), crate::hot::Fn0, _>(&by_reference);
        call(by_reference);
        call(by_reference);
        let found = entries_at(shim);
        assert_eq!(found.len(), 1, "reported by its call shim, once: {found:?}");
        assert_eq!(found[0].kind, Kind::PointerSizedClosure);
        assert!(found[0].name.ends_with("::{{closure}}"), "{}", found[0].name);
        // Not by the captured reference.
        assert!(entries_at(&a as *const u64 as u64).is_empty());
    }

    #[test]
    fn a_pointer_sized_closure_over_varying_data_is_one_entry() {
        let values: Vec<u64> = (0..50).collect();
        fn make(x: &u64) -> impl FnMut() -> u64 + '_ {
            move || *x
        }
        for value in &values {
            call(make(value)); // a new captured address every time
        }
        let found: Vec<_> = recorded().into_iter().filter(|e| e.name.contains("varying_data")).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, Kind::PointerSizedClosure);
    }

    #[test]
    fn kinds_follow_size_and_type_name() {
        assert_eq!(Kind::of(true, "fn() -> u32"), Kind::Fn);
        assert_eq!(Kind::of(true, "fn(&'_ str, &'_ u8) -> &'_ str"), Kind::Fn);
        assert_eq!(Kind::of(true, "extern \"C\" fn()"), Kind::Fn);
        assert_eq!(Kind::of(true, "app::main::{{closure}}"), Kind::PointerSizedClosure);
        assert_eq!(Kind::of(true, "&app::main::{{closure}}"), Kind::PointerSizedClosure);
        // A reference or Box to a fn item is pointer-sized but no function pointer.
        assert_eq!(Kind::of(true, "&app::tick"), Kind::PointerSizedClosure);
        assert_eq!(Kind::of(true, "alloc::boxed::Box<app::tick>"), Kind::PointerSizedClosure);
        assert_eq!(Kind::of(false, "app::main::{{closure}}"), Kind::Closure);
        assert_eq!(Kind::of(false, "app::tick"), Kind::Closure);
    }

    #[test]
    fn a_reference_to_a_fn_item_is_reported_by_its_call_shim_not_by_the_reference() {
        let reference = &answer;
        fn size_of_callable<F>(_: &F) -> usize {
            size_of::<F>()
        }
        assert_eq!(size_of_callable(&reference), size_of::<fn()>());
        assert_eq!(HotFn::current(reference).call(()), 42);
        let found = entries_at(shim_of::<(), crate::hot::Fn0, _>(&reference));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].kind, found[0].name), (Kind::PointerSizedClosure, "&thinpatch_client::entry::tests::answer"));
    }

    /// What the daemon reads to recognise an entry that only creates a future.
    #[test]
    fn async_returns_read_as_the_async_fn_or_block_followed_by_closure() {
        async fn handle(x: u32) -> u32 {
            x
        }
        fn returns<R, F: FnMut() -> R>(_: &F) -> &'static str {
            std::any::type_name::<R>()
        }
        assert_eq!(returns(&|| handle(3)), "thinpatch_client::entry::tests::async_returns_read_as_the_async_fn_or_block_followed_by_closure::handle::{{closure}}");
        assert_eq!(returns(&|| async { 5u8 }), "thinpatch_client::entry::tests::async_returns_read_as_the_async_fn_or_block_followed_by_closure::{{closure}}::{{closure}}");
        type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>;
        assert_eq!(std::any::type_name::<Boxed>(), "core::pin::Pin<alloc::boxed::Box<dyn core::future::future::Future<Output = u32> + core::marker::Send>>");
    }

    #[test]
    fn the_request_line_is_json_with_signed_offsets_and_escaped_names() {
        let entries = [
            EntryPoint { address: 0x1000, kind: Kind::Closure, name: "app::main::{{closure}}", returns: "alloc::string::String" },
            EntryPoint { address: 0x3000, kind: Kind::Fn, name: "fn(&'_ str) -> \"q\"\\", returns: "<T as Tr>::Out" },
            EntryPoint { address: 0x2000, kind: Kind::PointerSizedClosure, name: "a::{{closure}}", returns: "()" },
        ];
        let mut seq = 6;
        let lines = request_lines(&entries, 0x2000, || {
            seq += 1;
            seq
        });
        assert_eq!(
            lines,
            vec![concat!(
                r#"{"type":"entry-points","seq":7,"entries":["#,
                r#"{"offset":-4096,"kind":"closure","name":"app::main::{{closure}}","returns":"alloc::string::String"},"#,
                r#"{"offset":4096,"kind":"fn","name":"fn(&'_ str) -> \"q\"\\","returns":"<T as Tr>::Out"},"#,
                r#"{"offset":0,"kind":"pointer-sized-closure","name":"a::{{closure}}","returns":"()"}]}"#,
                "\n"
            )]
        );
        let parsed = json::parse(lines[0].trim_end()).unwrap();
        let list = match parsed.get("entries") {
            Some(json::Json::Array(items)) => items.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(list[1].get("name").and_then(json::Json::as_str), Some("fn(&'_ str) -> \"q\"\\"));
        // Addresses on either side of main, anywhere in the address space.
        let far = EntryPoint { address: u64::MAX, kind: Kind::Fn, name: "f", returns: "()" };
        assert!(far.to_json(1).starts_with(r#"{"offset":-2,"#));
    }

    #[test]
    fn many_entries_are_split_into_lines_below_the_limit_and_long_names_are_cut() {
        static LONG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let long: &'static str = LONG.get_or_init(|| "é".repeat(MAX_NAME_BYTES));
        let entries: Vec<EntryPoint> = (0..200)
            .map(|i| EntryPoint { address: 0x1000 + i, kind: Kind::Closure, name: long, returns: "()" })
            .collect();
        let mut seq = 0;
        let lines = request_lines(&entries, 0x1000, || {
            seq += 1;
            seq
        });
        assert!(lines.len() > 1);
        let mut offsets = Vec::new();
        for line in &lines {
            assert!(line.len() < MAX_BATCH_BYTES + 16 * 1024, "{}", line.len());
            let parsed = json::parse(line.trim_end()).unwrap();
            let Some(json::Json::Array(items)) = parsed.get("entries") else { panic!() };
            for item in items {
                let name = item.get("name").and_then(json::Json::as_str).unwrap();
                assert!(name.len() <= MAX_NAME_BYTES && name.ends_with('…'), "{}", name.len());
                offsets.push(item.get("offset").and_then(json::Json::as_u64).unwrap());
            }
        }
        assert_eq!(offsets, (0..200).collect::<Vec<u64>>());
        assert_eq!(seq as usize, lines.len());
    }

    #[test]
    fn the_fast_table_finds_what_it_remembers() {
        let _registry = registry(); // remember() wants the lock held
        let keys: Vec<u64> = (1..100u64).map(|i| 0x7000_0000_0000 + i * 16).collect();
        assert!(keys.iter().all(|&k| !seen(k)));
        keys.iter().for_each(|&k| remember(k));
        assert!(keys.iter().all(|&k| seen(k)));
        assert!(!seen(0x7000_0000_0008));
    }
}
