//! The hot path after an entry's first call: no allocation (the entry point is recorded once,
//! on the first call, and only looked up afterwards).
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn tick(frame: u64) -> u64 {
    frame + 1
}

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn calls_after_the_first_do_not_allocate() {
    let (a, b) = (1u64, 2u64);
    let pointer: fn(u64) -> u64 = tick;
    let run = |rounds: u64| {
        let mut total = 0;
        for frame in 0..rounds {
            total += thinpatch_client::call(move || a + b + frame); // three words
            total += thinpatch_client::call(|| a * 2); // pointer-sized: one reference
            total += thinpatch_client::HotFn::current(tick).call((frame,)); // a fn item
            total += thinpatch_client::HotFn::current(pointer).call((frame,)); // a fn pointer
        }
        total
    };
    // The first calls record the entries: that allocates.
    assert!(allocations_during(|| assert_eq!(run(1), 7)) > 0);
    assert_eq!(allocations_during(|| assert!(run(1000) > 0)), 0);
}
