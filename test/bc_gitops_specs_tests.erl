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
    located_errors("app.config", Cases, fun(_Errors) -> [] end).

%% Writes each `{App, Source, Kind, Line, Field}' case as apps/App/FileName
%% and checks that App has exactly that one error, no spec is valid, and
%% the tests `Extra(Errors)' returns pass.
located_errors(FileName, Cases, Extra) ->
    {setup,
     fun() ->
             Root = tmp_dir("kinds"),
             [write_spec(Root, {App, FileName}, Src) || {App, Src, _, _, _} <- Cases],
             {Root, bc_gitops_specs:parse_dir(Root, "apps")}
     end,
     fun({Root, _}) -> rm_rf(Root) end,
     fun({_, {ok, #{specs := Specs, errors := Errors}}}) ->
             [?_assertEqual([], Specs)
              | Extra(Errors)
                ++ [{App, ?_assertMatch([#{kind := Kind, line := Line, field := Field,
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

%% One spec written as Erlang terms, as JSON and as YAML (under both of its
%% names) is one #app_spec{}.
three_formats_give_one_record_test() ->
    Terms =
        "#{name => web, version => <<\"3.0.0\">>, description => <<\"caf\", 233/utf8, \"\">>,\n"
        "  source => #{type => release, url => <<\"https://h.test/web.tgz\">>,\n"
        "              sha256 => <<\"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\">>},\n"
        "  env => #{port => 8080, ratio => 0.5, name => <<\"w\">>, on => true, nothing => null,\n"
        "           list => [1, <<\"a\">>, -2.5e-3], nested => #{<<\"k\">> => [#{}]}},\n"
        "  health => #{type => custom, module => web_health, interval => 1000},\n"
        "  placement => [<<\"web@*\">>], rollout => #{max_parallel => 2, pause => 500},\n"
        "  depends_on => [base, db]}.\n",
    Json =
        "{\"name\": \"web\", \"version\": \"3.0.0\", \"description\": \"caf\\u00e9\",\n"
        " \"source\": {\"type\": \"release\", \"url\": \"https://h.test/web.tgz\",\n"
        "            \"sha256\": \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"},\n"
        " \"env\": {\"port\": 8080, \"ratio\": 0.5, \"name\": \"w\", \"on\": true, \"nothing\": null,\n"
        "         \"list\": [1, \"a\", -2.5e-3], \"nested\": {\"k\": [{}]}},\n"
        " \"health\": {\"type\": \"custom\", \"module\": \"web_health\", \"interval\": 1000},\n"
        " \"placement\": [\"web@*\"], \"rollout\": {\"max_parallel\": 2, \"pause\": 500},\n"
        " \"depends_on\": [\"base\", \"db\"]}\n",
    Yaml =
        "# apps/web/app.yaml\n"
        "name: web\n"
        "version: \"3.0.0\"\n"
        "description: \"caf\\u00e9\"\n"
        "source:\n"
        "  type: release\n"
        "  url: https://h.test/web.tgz\n"
        "  sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n"
        "env:\n"
        "  port: 8080\n"
        "  ratio: 0.5\n"
        "  name: w\n"
        "  \"on\": true\n"
        "  nothing: ~\n"
        "  list: [1, a, -2.5e-3]\n"
        "  nested:\n"
        "    k:\n"
        "      - {}\n"
        "health: {type: custom, module: web_health, interval: 1000}\n"
        "placement: [web@*]\n"
        "rollout:\n"
        "  max_parallel: 2\n"
        "  pause: 500\n"
        "depends_on:\n"
        "  - base\n"
        "  - db\n",
    Read = fun(File, Text) ->
                   with_root(fun(Root) ->
                       write_spec(Root, {"web", File}, Text),
                       {ok, #{specs := [Spec], errors := [], warnings := []}} =
                           bc_gitops_specs:parse_dir(Root, "apps"),
                       Spec
                   end)
           end,
    FromTerms = Read("app.config", Terms),
    ?assertEqual(
       #app_spec{name = web, version = <<"3.0.0">>, description = <<"caf", 233/utf8>>,
                 source = #source_spec{type = release, url = <<"https://h.test/web.tgz">>,
                                       sha256 = <<"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08">>},
                 env = #{port => 8080, ratio => 0.5, name => <<"w">>, on => true, nothing => null,
                         list => [1, <<"a">>, -2.5e-3], nested => #{<<"k">> => [#{}]}},
                 health = #health_spec{type = custom, module = web_health, interval = 1000},
                 placement = [<<"web@*">>], rollout = #{max_parallel => 2, pause => 500},
                 depends_on = [base, db]},
       FromTerms),
    ?assertEqual(FromTerms, Read("app.json", Json)),
    ?assertEqual(FromTerms, Read("app.yaml", Yaml)),
    ?assertEqual(FromTerms, Read("app.yml", Yaml)).

%% YAML errors name the file, the line and the field, as term files do.
yaml_errors_have_lines_test_() ->
    Cases = [
        {"syntax", "name: syntax\nversion: '1'\n  source: x\n", syntax, 3, <<>>},
        {"two_docs", "name: two_docs\n---\nname: two_docs\n", not_a_map, 2, <<>>},
        {"missing", "name: missing\nsource:\n  type: hex\n", missing_field, 1, <<"version">>},
        {"wrong_type", "name: wrong_type\nsource: {type: hex}\nversion: 1.0\n",
         wrong_type, 3, <<"version">>},
        {"bad_type", "name: bad_type\nversion: '1'\nsource:\n  type: svn\n",
         invalid_value, 4, <<"source.type">>},
        {"bad_dep", "name: bad_dep\nversion: '1'\nsource: {type: hex}\ndepends_on:\n- ok_dep\n- Bad-Dep\n",
         invalid_value, 6, <<"depends_on[1]">>},
        {"alias", "name: alias\nversion: &v '1'\nsource: {type: hex}\ndescription: *v\n",
         syntax, 4, <<>>},
        {"tag", "name: tag\nversion: '1'\nsource: {type: hex}\nenv: {raw: !!binary aGk=}\n",
         syntax, 4, <<>>}
    ],
    located_errors(
      "app.yaml", Cases,
      fun(Errors) ->
              [?_assertEqual(<<"apps/bad_type/app.yaml:4: source.type: \"svn\" is not one of hex | git | release">>,
                             bc_gitops_specs:format_diagnostic(
                               hd([E || E = #{app := <<"bad_type">>} <- Errors])))]
      end).

%% A billion-laughs file and a megabyte of nesting come back as errors in
%% well under a second: aliases are refused, never expanded.
yaml_bombs_are_refused_fast_test() ->
    with_root(fun(Root) ->
        Laughs = ["name: lol\nlol0: &lol0 \"lol\"\n"
                  | [io_lib:format("lol~b: &lol~b [~s]\n",
                                   [I, I, lists:join(", ", lists:duplicate(10, io_lib:format("*lol~b", [I - 1])))])
                     || I <- lists:seq(1, 9)]],
        write_spec(Root, {"lol", "app.yaml"}, Laughs),
        write_spec(Root, {"deep", "app.yml"}, lists:duplicate(1000000, $[)),
        write_spec(Root, {"fine", "app.yaml"}, "name: fine\nversion: '1'\nsource: {type: hex}\n"),
        {Micros, {ok, #{specs := [#app_spec{name = fine}], errors := Errors}}} =
            timer:tc(bc_gitops_specs, parse_dir, [Root, "apps"]),
        ?assertMatch([#{app := <<"deep">>, kind := syntax, line := 1},
                      #{app := <<"lol">>, kind := syntax, line := 3}], Errors),
        ?assert(Micros < 500000)
    end).

both_config_and_yaml_is_an_error_test() ->
    with_root(fun(Root) ->
        write_spec(Root, "twice", minimal_spec("twice")),
        write_spec(Root, {"twice", "app.yml"}, "name: twice\nversion: '1'\nsource: {type: hex}\n"),
        {ok, #{specs := [], errors := [E]}} = bc_gitops_specs:parse_dir(Root, "apps"),
        ?assertMatch(#{kind := duplicate_spec, app := <<"twice">>,
                       message := <<"app.config and app.yml exist: keep one">>}, E)
    end).
