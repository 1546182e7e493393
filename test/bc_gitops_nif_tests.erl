%%% The NIF's contract with Erlang: record layout, exact terms (compared with
%%% file:consult/1), the atom table, and a clear error when the library is
%%% missing.
-module(bc_gitops_nif_tests).

-include_lib("eunit/include/eunit.hrl").
-include("bc_gitops.hrl").

-import(bc_gitops_test_util, [tmp_dir/1, write_spec/3, write_file/2, rm_rf/1]).

loaded_test() ->
    ?assertEqual(ok, bc_gitops_nif:load_error()).

%% Every field of every record, set and read back by record syntax: proves
%% the NIF's positional encoding matches include/bc_gitops.hrl.
record_layout_test() ->
    with_root(fun record_layout/1).

with_root(Fun) ->
    Root = tmp_dir("nif"),
    try Fun(Root) after rm_rf(Root) end.

record_layout(Root) ->
    write_spec(Root, "full", [
        "%% every field\n"
        "#{name => full, version => <<\"2.1.0\">>, description => <<\"All fields\">>,\n"
        "  source => #{type => git, url => <<\"https://example.test/full.git\">>,\n"
        "              ref => <<\"v2.1.0\">>, build => mix},\n"
        "  env => #{port => 8080, mode => fast},\n"
        "  health => #{type => custom, module => full_health, path => <<\"/h\">>, port => 9,\n"
        "              interval => 1000, timeout => 200},\n"
        "  depends_on => [base_app, other_app],\n"
        "  placement => [<<\"web*@*\">>, \"edge@h\"], rollout => #{max_parallel => 2, pause => 100},\n"
        "  isolation => vm, vm_config => #{memory_limit => 256, scheduler_limit => 2,\n"
        "                                  node_prefix => full_vm, extra_args => [\"+A\", <<\"4\">>]}}.\n"]),
    write_spec(Root, "rel", [
        "#{name => rel, version => \"0.1\", source => #{type => release,\n"
        "  url => \"https://example.test/rel.tar.gz\",\n"
        "  sha256 => <<\"", lists:duplicate(64, $A), "\">>}}.\n"]),
    {ok, #{specs := [Full, Rel], errors := [], warnings := []}} =
        bc_gitops_specs:parse_dir(Root, "apps"),
    ?assertEqual(length(record_info(fields, app_spec)) + 1, tuple_size(Full)),
    ?assertMatch(#app_spec{name = full, version = <<"2.1.0">>,
                           description = <<"All fields">>,
                           env = #{port := 8080, mode := fast},
                           depends_on = [base_app, other_app],
                           placement = [<<"web*@*">>, <<"edge@h">>],
                           rollout = #{max_parallel := 2, pause := 100},
                           isolation = vm}, Full),
    ?assertEqual(#{memory_limit => 256, scheduler_limit => 2, node_prefix => <<"full_vm">>,
                   extra_args => [<<"+A">>, <<"4">>]}, Full#app_spec.vm_config),
    ?assertEqual(#source_spec{type = git, url = <<"https://example.test/full.git">>,
                              ref = <<"v2.1.0">>, sha256 = undefined, build = mix},
                 Full#app_spec.source),
    ?assertEqual(#health_spec{type = custom, port = 9, path = <<"/h">>, module = full_health,
                              interval = 1000, timeout = 200},
                 Full#app_spec.health),
    %% Strings are accepted for text fields; sha256 is normalised to lowercase.
    ?assertMatch(#app_spec{name = rel, version = <<"0.1">>, description = undefined,
                           health = undefined, env = #{}, depends_on = [], placement = all,
                           rollout = undefined, isolation = embedded,
                           vm_config = undefined}, Rel),
    ?assertEqual(#source_spec{type = release, url = <<"https://example.test/rel.tar.gz">>,
                              sha256 = list_to_binary(lists:duplicate(64, $a))},
                 Rel#app_spec.source).

%% Health defaults are the record defaults.
health_defaults_test() ->
    with_root(fun health_defaults/1).

health_defaults(Root) ->
    write_spec(Root, "web", "#{name => web, version => <<\"1\">>, source => #{type => hex},\n"
                            "  health => #{type => http, port => 8080}}.\n"),
    {ok, #{specs := [#app_spec{health = H}]}} = bc_gitops_specs:parse_dir(Root, "apps"),
    ?assertEqual(#health_spec{type = http, port = 8080}, H).

%% Env values: each written in a spec file, read by the NIF and by
%% file:consult/1; the two must be exactly equal (=:=).
consult_equivalence_test_() ->
    Cases = lists:zip(lists:seq(1, length(env_corpus())), env_corpus()),
    {setup,
     fun() ->
             Root = tmp_dir("consult"),
             [write_spec(Root, app_name(N), ["#{name => ", app_name(N), ", version => <<\"1\">>,\n"
                                             "  source => #{type => hex},\n"
                                             "  env => #{value => ", Src, "\n}}.\n"])
              || {N, Src} <- Cases],
             {Root, bc_gitops_specs:parse_dir(Root, "apps")}
     end,
     fun({Root, _}) -> rm_rf(Root) end,
     fun({Root, {ok, #{specs := Specs, errors := Errors}}}) ->
             ByName = maps:from_list([{atom_to_list(S#app_spec.name), S} || S <- Specs]),
             [{lists:flatten(io_lib:format("~ts", [Src])),
               fun() ->
                       App = app_name(N),
                       File = filename:join([Root, "apps", App, "app.config"]),
                       {ok, [#{env := #{value := Expected}}]} = file:consult(File),
                       ?assertEqual([], [E || E = #{app := A} <- Errors,
                                              A =:= list_to_binary(App)]),
                       #app_spec{env = #{value := Got}} = maps:get(App, ByName),
                       ?assert(Expected =:= Got)
               end}
              || {N, Src} <- Cases]
     end}.

app_name(N) -> "c" ++ integer_to_list(N).

env_corpus() ->
    [
     "atom", "'quoted atom'", "'\\n\\t\\''", "'héllo'", "'Uppercase'", "a@b", "true",
     "undefined", "'and'", "maybe",
     "\"string\"", "\"é\"", "\"\"", "\"ab\" \"cd\"", "\"\\x{1F600}\"", "\"\\\"quoted\\\"\"",
     "\"tab\\there\\101\\x41\\^G\\s\\z\"",
     "<<\"bin\">>", "<<\"é\"/utf8>>", "<<\"é\">>", "<<\"€\">>", "<<1,2,3>>", "<<>>",
     "<<\"a\", 0, \"b\">>", "<<1:16>>", "<<-1:32/signed-little>>", "<<1.5/float>>",
     "<<2.5:32/float>>", "<<\"x\"/utf16>>", "<<\"€\"/utf32-little>>", "<<$a, $\\n>>",
     "<<300>>", "<<1:4, 2:4>>", "<<<<1,2>>/binary, 3>>", "<<\"ab\":16>>", "<<16#FFFF:16/unsigned-big>>",
     "16#FF", "16#ff_ff", "2#1010", "36#Zz", "1_000_000", "-42", "+7", "- 5", "-16#10",
     "$a", "$\\n", "$\\x{1F600}", "$\\101", "$\\^A", "$ ", "$\\s", "$é", "-$a",
     "123456789012345678901234567890", "-99999999999999999999", "18446744073709551616",
     "9223372036854775807", "-9223372036854775808", "9223372036854775808",
     "1.5", "-0.5", "1.0e10", "2.5E-3", "1_0.2_5", "0.1", "1.7976931348623157e308",
     "4.9e-324", "1.0e-310", "3.141592653589793", "100.0e+2", "0.30000000000000004",
     "[]", "[1,2,3]", "[a|b]", "[a,b|[c]]", "[$a | \"bc\"]", "{}", "{a, {b, c}}",
     "#{}", "#{a => 1, <<\"k\">> => [x], {t} => #{}}", "#{a => 1, a => 2}",
     "#{1 => int, 1.0 => float}",
     "[{nested, #{deep => [1, {2, <<\"3\">>}]}}]",
     "[ % a comment inside\n  1, % another\n  2]",
     "{'ünïcödé', \"ünïcödé\", <<\"ünïcödé\"/utf8>>}"
    ].

%% 10,000 spec files whose names are junk (invalid, or not their
%% directory's): the atom table does not grow by one atom.
junk_names_make_no_atoms_test_() ->
    {timeout, 120, fun junk_names_make_no_atoms/0}.

junk_names_make_no_atoms() ->
    Root = tmp_dir("junk"),
    try junk_names_make_no_atoms(Root) after rm_rf(Root) end.

junk_names_make_no_atoms(Root) ->
    Tag = "q" ++ integer_to_list(erlang:unique_integer([positive])) ++ "x",
    lists:foreach(
      fun(N) ->
              I = integer_to_list(N),
              {Dir, Name} =
                  case N rem 3 of
                      0 -> {"Junk-" ++ Tag ++ I, "'Junk-" ++ Tag ++ I ++ "'"};
                      1 -> {"junk" ++ Tag ++ I, "other" ++ Tag ++ I};
                      2 -> {"bad" ++ Tag ++ I, "'bad" ++ Tag ++ I ++ "!'"}
                  end,
              write_spec(Root, Dir, ["#{name => ", Name, ", version => <<\"1\">>,\n"
                                     "  source => #{type => hex},\n"
                                     "  env => #{envkey", Tag, I, " => envval", Tag, I, "},\n"
                                     "  depends_on => [dep", Tag, I, "]}.\n"])
      end, lists:seq(1, 10000)),
    %% Warm up: the first call may create the atoms of the result shape.
    {ok, _} = bc_gitops_specs:parse_dir(Root, "apps"),
    Before = erlang:system_info(atom_count),
    {ok, #{specs := Specs, errors := Errors}} = bc_gitops_specs:parse_dir(Root, "apps"),
    After = erlang:system_info(atom_count),
    ?assertEqual([], Specs),
    ?assertEqual(10000, length(lists:usort([A || #{app := A} <- Errors]))),
    ?assertEqual(Before, After),
    ?assertError(badarg, list_to_existing_atom("envval" ++ Tag ++ "2")),
    ?assertError(badarg, list_to_existing_atom("other" ++ Tag ++ "1")),
    ?assertError(badarg, list_to_existing_atom("dep" ++ Tag ++ "5")).

%% Without the library the module still loads, and a call names the file
%% that is missing. Runs in a separate node that has a copy of the beam
%% file but no priv/ directory.
missing_library_test_() ->
    {timeout, 60, fun missing_library/0}.

missing_library() ->
    Dir = tmp_dir("nolib"),
    Ebin = filename:join([Dir, "bc_gitops", "ebin"]),
    ok = filelib:ensure_path(Ebin),
    Beam = code:which(bc_gitops_nif),
    {ok, _} = file:copy(Beam, filename:join(Ebin, "bc_gitops_nif.beam")),
    {ok, Peer, Node} = peer:start_link(#{connection => standard_io,
                                         args => ["-pa", Ebin, "-kernel", "logger_level", "none"]}),
    try
        Expected = filename:join([Dir, "bc_gitops", "priv", "bc_gitops_nif.so"]),
        {error, {library_missing, Missing}} = peer:call(Peer, bc_gitops_nif, load_error, []),
        ?assertEqual(Expected, Missing),
        ?assertError({bc_gitops_nif_not_loaded, Expected, {error, {library_missing, Expected}}},
                     peer:call(Peer, bc_gitops_nif, parse_dir, [<<".">>, <<"apps">>])),
        _ = Node
    after
        peer:stop(Peer),
        rm_rf(Dir)
    end.

%% Reloading the module (a shell l/1, a release upgrade) must not replace
%% the working NIF with stubs: the load fails and the old code stays.
reload_keeps_the_nif_test() ->
    ?assertMatch({error, on_load_failure}, code:load_file(bc_gitops_nif)),
    ?assertEqual(ok, bc_gitops_nif:load_error()),
    ?assertEqual(<<"https://***@h/x">>, bc_gitops_nif:redact_url(<<"https://u:p@h/x">>)).

%% consult/1 gives what file:consult/1 gives for the same text, here a hex
%% package's metadata, with its known atoms (true, false) as atoms.
consult_matches_file_consult_test() ->
    Text = <<"{<<\"name\">>,<<\"pkg\">>}.\n{<<\"version\">>,<<\"1.0.0\">>}.\n"
             "{<<\"requirements\">>,[{<<\"dep\">>,[{<<\"app\">>,<<\"dep\">>},\n"
             "  {<<\"optional\">>,false},{<<\"requirement\">>,<<\"~> 1.0\">>}]}]}.\n"
             "{<<\"build_tools\">>,[<<\"rebar3\">>]}.\n{ok, 1.5, \"str\", #{a => [b | c]}}.\n">>,
    Root = tmp_dir("consult"),
    try
        File = filename:join(Root, "metadata.config"),
        ok = file:write_file(File, Text),
        ?assertEqual(file:consult(File), bc_gitops_nif:consult(Text))
    after
        rm_rf(Root)
    end.

%% An atom the VM does not know yet is an error with its line, and is not
%% made; bad syntax is an error with its line.
consult_makes_no_atom_test() ->
    Name = <<"bc_gitops_never_made_", (integer_to_binary(erlang:unique_integer([positive])))/binary>>,
    ?assertEqual({error, {2, {unknown_atom, Name}}},
                 bc_gitops_nif:consult(<<"{<<\"name\">>, <<\"x\">>}.\n{ok, ", Name/binary, "}.\n">>)),
    ?assertError(badarg, binary_to_existing_atom(Name, utf8)),
    ?assertMatch({error, {L, _}} when L >= 3, bc_gitops_nif:consult(<<"{a}.\n\n{b\n">>)).

%% The one gunzip (hex registry files): what zlib made comes back, within
%% the bound; a bomb and what is not gzip are errors.
gunzip_test() ->
    Data = binary:copy(<<"registry ">>, 1000),
    ?assertEqual({ok, Data}, bc_gitops_nif:gunzip(zlib:gzip(Data), byte_size(Data))),
    Bomb = zlib:gzip(binary:copy(<<0>>, 16 bsl 20)),
    ?assertEqual({error, {too_large_unpacked, 1 bsl 20}}, bc_gitops_nif:gunzip(Bomb, 1 bsl 20)),
    ?assertMatch({error, {bad_archive, _}}, bc_gitops_nif:gunzip(<<"plain text">>, 100)).
