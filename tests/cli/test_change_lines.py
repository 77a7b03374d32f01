"""How run and watch name changed functions."""

from daemon.cli.change_lines import changed_names, located, named_list, short_name


def test_short_names_are_what_people_call_them() -> None:
    assert short_name("app::world::frame") == "frame()"
    assert short_name("app::main::{{closure}}") == "a closure in main()"
    assert short_name("<app::Player as core::fmt::Display>::fmt") == "Player::fmt()"
    assert short_name("app::Grid<T>::get") == "get()"
    assert short_name("app::wrap<alloc::vec::Vec<u8>>") == "wrap<alloc::vec::Vec<u8>>()"


def test_lists_are_cut_after_a_few_names() -> None:
    assert named_list(["a()", "b()", "a()"]) == "a(), b()"
    assert named_list([f"f{i}()" for i in range(6)]) == "f0(), f1(), f2(), f3() and 2 more"
    assert changed_names({"changes": [{"function": "app::frame"}, {"function": "app::greet"}]}) == "frame(), greet()"


def test_a_place_is_shown_when_known() -> None:
    assert located({"function": "app::frame", "file": "src/main.rs", "line": 12}) == "frame() (src/main.rs:12)"
    assert located({"function": "app::frame"}) == "frame()"
