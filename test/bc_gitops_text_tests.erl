-module(bc_gitops_text_tests).

-include_lib("eunit/include/eunit.hrl").

short_line_is_kept_test() ->
    ?assertEqual(["  a b c"], bc_gitops_text:wrap("  a b c", 10)),
    ?assertEqual([""], bc_gitops_text:wrap("", 10)).

long_line_breaks_at_spaces_test() ->
    ?assertEqual(["aaa bbb", "    ccc", "    ddd"], bc_gitops_text:wrap("aaa bbb ccc ddd", 8)).

indent_is_kept_and_deepened_test() ->
    ?assertEqual(["  x failed:", "      reason"], bc_gitops_text:wrap("  x failed: reason", 12)).

long_word_is_cut_test() ->
    Lines = bc_gitops_text:wrap("see https://example.com/a/very/long/path end", 12),
    ?assertEqual(["see", "    https://", "    example.", "    com/a/ve", "    ry/long/", "    path end"],
                 Lines).

every_line_fits_test() ->
    Words = [lists:duplicate(N rem 23 + 1, $w) || N <- lists:seq(1, 300)],
    Line = "  " ++ lists:join(" ", Words),
    Lines = bc_gitops_text:wrap(lists:flatten(Line), 100),
    ?assert(lists:all(fun(L) -> string:length(L) =< 100 end, Lines)),
    %% Nothing is lost: the same words in the same order.
    ?assertEqual(string:lexemes(lists:flatten(Line), " "),
                 string:lexemes(lists:flatten(lists:join(" ", Lines)), " ")).

deep_indent_and_narrow_width_end_test() ->
    Lines = bc_gitops_text:wrap(lists:duplicate(30, $\s) ++ "abcdefghij klmnop", 8),
    ?assert(lists:all(fun(L) -> string:length(L) =< 8 end, Lines)),
    ?assertEqual("abcdefghijklmnop", lists:filter(fun(C) -> C =/= $\s end, lists:flatten(Lines))),
    ?assertEqual([""], bc_gitops_text:wrap(lists:duplicate(12, $\s), 8)).
