%%% Spec discovery and validation as Erlang sees it: good specs survive
%%% broken neighbours, and each error names its file, line and field.
-module(bc_gitops_specs_tests).

-include_lib("eunit/include/eunit.hrl").
-include("bc_gitops.hrl").

-import(bc_gitops_test_util, [tmp_dir/1, write_spec/3, write_file/2, rm_rf/1, minimal_spec/1]).

with_root(Fun) ->
    Root = tmp_dir("specs"),
    try Fun(Root) after rm_rf(Root) end.

broken_spec_does_not_hide_good_ones_test() ->
    with_root(fun(Root) ->
        write_spec(Root, "alpha", minimal_spec("alpha")),
        write_spec(Root, "beta",
                   "#{name => beta,\n"
                   "  version => <<\"1.0\">>,\n"
                   "  source => #{type => svn}}.\n"),
        write_spec(Root, "gamma", minimal_spec("gamma")),
        {ok, #{specs := Specs, errors := [Error]}} = bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertEqual([alpha, gamma], [S#app_spec.name || S <- Specs]),
        ?assertMatch(#{app := <<"beta">>, file := <<"apps/beta/app.config">>, line := 3,
                       field := <<"source.type">>, kind := invalid_value}, Error),
        ?assertEqual(<<"apps/beta/app.config:3: source.type: \"svn\" is not one of hex | git | release">>,
                     bc_gitops_specs:format_diagnostic(Error))
    end).

%% One file per error kind the validator reports, with the line and field
%% each must carry.
error_kinds_test_() ->
    Cases = [
        {"syntax", "#{name => syntax,\n  version => <<\"1\">>\n  source => x}.\n",
         syntax, 3, <<>>},
        {"not_a_map", "[{name, not_a_map}].\n", not_a_map, 1, <<>>},
        {"two_terms", "#{}.\n#{}.\n", not_a_map, 2, <<>>},
        {"missing", "#{name => missing,\n  source => #{type => hex}}.\n",
         missing_field, 1, <<"version">>},
        {"wrong_type", "#{name => wrong_type, version => 1,\n  source => #{type => hex}}.\n",
         wrong_type, 1, <<"version">>},
        {"empty_version", "#{name => empty_version,\n version => <<\"\">>, source => #{type => hex}}.\n",
         invalid_value, 2, <<"version">>},
        {"mismatch", "#{name => other_name, version => <<\"1\">>, source => #{type => hex}}.\n",
         name_mismatch, 1, <<"name">>},
        {"bad_sha", "#{name => bad_sha, version => <<\"1\">>,\n source => #{type => release,\n"
                    "  url => <<\"https://x.test/a.tgz\">>,\n  sha256 => <<\"abc\">>}}.\n",
         invalid_value, 4, <<"source.sha256">>},
        {"no_url", "#{name => no_url, version => <<\"1\">>,\n source => #{type => git}}.\n",
         missing_field, 2, <<"source.url">>},
        {"bad_port", "#{name => bad_port, version => <<\"1\">>, source => #{type => hex},\n"
                     " health => #{type => tcp,\n  port => 70000}}.\n",
         invalid_value, 3, <<"health.port">>},
        {"bad_path", "#{name => bad_path, version => <<\"1\">>, source => #{type => hex},\n"
                     " health => #{type => http, port => 80, path => <<\"health\">>}}.\n",
         invalid_value, 2, <<"health.path">>},
        {"bad_interval", "#{name => bad_interval, version => <<\"1\">>, source => #{type => hex},\n"
                         " health => #{type => custom, module => m,\n interval => 0}}.\n",
         invalid_value, 3, <<"health.interval">>},
        {"bad_dep", "#{name => bad_dep, version => <<\"1\">>, source => #{type => hex},\n"
                    " depends_on => [ok_dep,\n 'Bad-Dep']}.\n",
         invalid_value, 3, <<"depends_on[1]">>},
        {"self_dep", "#{name => self_dep, version => <<\"1\">>, source => #{type => hex},\n"
                     " depends_on => [self_dep]}.\n",
         invalid_value, 2, <<"depends_on[0]">>},
        {"env_key", "#{name => env_key, version => <<\"1\">>, source => #{type => hex},\n"
                    " env => #{\"port\" => 1}}.\n",
         wrong_type, 2, <<"env">>}
    ],
    {setup,
     fun() ->
             Root = tmp_dir("kinds"),
             [write_spec(Root, App, Src) || {App, Src, _, _, _} <- Cases],
             {Root, bc_gitops_specs:parse_dir(Root, "apps")}
     end,
     fun({Root, _}) -> rm_rf(Root) end,
     fun({_, {ok, #{specs := Specs, errors := Errors}}}) ->
             [?_assertEqual([], Specs)
              | [{App, ?_assertMatch([#{kind := Kind, line := Line, field := Field,
                                        file := <<"apps/", _/binary>>}],
                                     [E || E = #{app := A} <- Errors,
                                           A =:= list_to_binary(App)])}
                 || {App, _, Kind, Line, Field} <- Cases]]
     end}.

unknown_keys_are_warnings_test() ->
    with_root(fun(Root) ->
        write_spec(Root, "future",
                   "#{name => future, version => <<\"1\">>, source => #{type => hex},\n"
                   "  strategy => canary}.\n"),
        {ok, #{specs := [#app_spec{name = future}], errors := [], warnings := [W]}} =
            bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertMatch(#{kind := unknown_key, field := <<"strategy">>, line := 2}, W)
    end).

json_spec_test() ->
    with_root(fun(Root) ->
        write_spec(Root, {"web", "app.json"},
                   "{\"name\": \"web\", \"version\": \"3.0.0\", \"description\": \"JSON\",\n"
                   " \"source\": {\"type\": \"git\", \"url\": \"file:///srv/web.git\", \"ref\": \"main\"},\n"
                   " \"env\": {\"port\": 8080, \"ratio\": 0.5, \"name\": \"w\", \"on\": true,\n"
                   "         \"nothing\": null, \"list\": [1, \"a\"], \"nested\": {\"k\": \"v\"}},\n"
                   " \"depends_on\": [\"base\"],\n"
                   " \"health\": {\"type\": \"http\", \"port\": 8080, \"path\": \"/health\"}}\n"),
        write_spec(Root, "base", minimal_spec("base")),
        {ok, #{specs := [Base, Web], errors := []}} = bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertEqual(base, Base#app_spec.name),
        ?assertEqual(#app_spec{name = web, version = <<"3.0.0">>, description = <<"JSON">>,
                               source = #source_spec{type = git, url = <<"file:///srv/web.git">>,
                                                     ref = <<"main">>},
                               env = #{port => 8080, ratio => 0.5, name => <<"w">>, on => true,
                                       nothing => null, list => [1, <<"a">>],
                                       nested => #{<<"k">> => <<"v">>}},
                               health = #health_spec{type = http, port = 8080,
                                                     path = <<"/health">>},
                               depends_on = [base]},
                     Web)
    end).

json_syntax_error_has_line_test() ->
    with_root(fun(Root) ->
        write_spec(Root, {"bad", "app.json"}, "{\"name\": \"bad\",\n\"version\": }\n"),
        {ok, #{errors := [E]}} = bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertMatch(#{kind := syntax, line := 2, file := <<"apps/bad/app.json">>}, E)
    end).

both_formats_is_an_error_test() ->
    with_root(fun(Root) ->
        write_spec(Root, "twice", minimal_spec("twice")),
        write_spec(Root, {"twice", "app.json"},
                   "{\"name\":\"twice\",\"version\":\"1\",\"source\":{\"type\":\"hex\"}}"),
        {ok, #{specs := [], errors := [E]}} = bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertMatch(#{kind := duplicate_spec, app := <<"twice">>}, E)
    end).

symlinked_app_dir_is_refused_test() ->
    with_root(fun(Root) ->
        Outside = tmp_dir("outside"),
        write_file(filename:join(Outside, "app.config"), minimal_spec("sneaky")),
        ok = filelib:ensure_path(filename:join(Root, "apps")),
        ok = file:make_symlink(Outside, filename:join([Root, "apps", "sneaky"])),
        {ok, #{specs := [], errors := [E]}} = bc_gitops_specs:parse_dir(Root, "apps"),
        rm_rf(Outside),
        ?assertMatch(#{kind := symlink, app := <<"sneaky">>}, E)
    end).

apps_dir_errors_test() ->
    with_root(fun(Root) ->
        ?assertMatch({error, {apps_dir_missing, _}}, bc_gitops_specs:parse_dir(Root, "apps")),
        ?assertMatch({error, {apps_dir_outside, _}}, bc_gitops_specs:parse_dir(Root, "../x")),
        ?assertMatch({error, {apps_dir_outside, _}}, bc_gitops_specs:parse_dir(Root, "/etc")),
        write_file(filename:join(Root, "file"), "x"),
        ?assertMatch({error, {apps_dir_not_dir, _}}, bc_gitops_specs:parse_dir(Root, "file"))
    end).

dir_without_spec_is_a_warning_test() ->
    with_root(fun(Root) ->
        ok = filelib:ensure_path(filename:join([Root, "apps", "empty"])),
        write_spec(Root, "real", minimal_spec("real")),
        {ok, #{specs := [#app_spec{name = real}], errors := [], warnings := [W]}} =
            bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertMatch(#{kind := no_spec_file, app := <<"empty">>}, W)
    end).

%% A spec file whose first line says `coding: latin-1' is read as
%% file:consult/1 reads it, byte by byte (here an é as the byte 233); the
%% same bytes without the comment are not UTF-8, an error on their line.
latin1_coding_comment_test() ->
    with_root(fun(Root) ->
        Body = <<"#{name => l1, version => <<\"1\">>, source => #{type => hex},\n"
                 "  env => #{greeting => <<\"caf", 233, "\">>, word => \"caf", 233, "\"}}.\n">>,
        write_file(filename:join([Root, "apps", "l1", "app.config"]),
                   <<"%% coding: latin-1\n", Body/binary>>),
        write_file(filename:join([Root, "apps", "l2", "app.config"]), Body),
        {ok, [Consulted]} = file:consult(filename:join([Root, "apps", "l1", "app.config"])),
        {ok, #{specs := [#app_spec{name = l1, env = Env}], errors := [#{app := <<"l2">>} = E]}} =
            bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertEqual(maps:get(env, Consulted), Env),
        ?assertEqual(<<"caf", 233>>, maps:get(greeting, Env)),
        ?assertMatch(#{line := 2}, E)
    end).
