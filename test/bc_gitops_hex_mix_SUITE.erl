%%% Elixir (mix) packages from a hex repository: a local signed repository
%%% (bc_gitops_hex_repo, served on 127.0.0.1) holds a small Elixir app that
%%% depends on an Elixir library and on an Erlang (rebar3) package, which
%%% the library depends on too. They are fetched, verified, laid out in
%%% deps/ and built by mix with no Hex archive and no network, then
%%% deployed, upgraded hot and removed through the reconciler and the
%%% default runtime.
-module(bc_gitops_hex_mix_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("bc_gitops.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([elixir_package_builds_offline/1, missing_dependency_is_not_fetched/1,
         deploy_hot_upgrade_remove/1, tampered_elixir_package/1,
         tampered_elixir_dependency/1, erlang_package_on_elixir_package/1,
         build_tool_choice/1]).

-import(bc_gitops_hex_repo, [public_pem/1, registry/5, release/6, release/7]).
-import(bc_gitops_test_util, [commit/2, write_file/2, wait_reconciled/1]).

-define(REPO, <<"test_repo">>).
%% Builds run mix and rebar3 on a loaded machine.
-define(BUILD_TIMEOUT, 600000).

all() ->
    [elixir_package_builds_offline, missing_dependency_is_not_fetched,
     deploy_hot_upgrade_remove, tampered_elixir_package, tampered_elixir_dependency,
     erlang_package_on_elixir_package, build_tool_choice].

init_per_suite(Config) ->
    Priv = ?config(priv_dir, Config),
    {Repo, Work, Key} = bc_gitops_hex_repo:init(Priv),
    Pkg = fun(Name, Releases) -> registry(Repo, Name, Name, Releases, Key) end,
    %% hx_dep (Erlang): ~> 0.2 must pick 0.2.5.
    Pkg(<<"hx_dep">>, [release(Repo, Work, <<"hx_dep">>, V, [], rebar3)
                       || V <- [<<"0.2.0">>, <<"0.2.5">>, <<"1.0.0">>]]),
    UtilDeps = [{<<"hx_dep">>, <<"~> 0.2">>}],
    Util = fun(Name) -> release(Repo, Work, Name, <<"0.1.0">>, UtilDeps, mix,
                                util_files(Name)) end,
    Pkg(<<"hx_exutil">>, [Util(<<"hx_exutil">>)]),
    ExDeps = [{<<"hx_exutil">>, <<"~> 0.1">>}, {<<"hx_dep">>, <<"~> 0.2">>}],
    Pkg(<<"hx_ex">>, [release(Repo, Work, <<"hx_ex">>, V, ExDeps, mix, ex_files(V, Code))
                      || {V, Code} <- [{<<"1.0.0">>, v1}, {<<"2.0.0">>, v2}]]),
    %% The tarball changes after the registry recorded its checksum.
    Pkg(<<"hx_ex_tampered">>, [release(Repo, Work, <<"hx_ex_tampered">>, <<"1.0.0">>, [], mix,
                                       util_files(<<"hx_ex_tampered">>))]),
    TarFile = filename:join([Repo, "tarballs", "hx_ex_tampered-1.0.0.tar"]),
    {ok, TarBin} = file:read_file(TarFile),
    ok = file:write_file(TarFile, <<TarBin/binary, 0>>),
    %% A dependency whose signed registry records another inner checksum.
    #{inner_checksum := <<B, Rest/binary>>} = BadUtil = Util(<<"hx_exutil_bad">>),
    Pkg(<<"hx_exutil_bad">>, [BadUtil#{inner_checksum => <<(B bxor 1), Rest/binary>>}]),
    Pkg(<<"hx_ex_baddep">>,
        [release(Repo, Work, <<"hx_ex_baddep">>, <<"1.0.0">>,
                 [{<<"hx_exutil_bad">>, <<"~> 0.1">>}], mix,
                 ex_files(<<"hx_ex_baddep">>, <<"1.0.0">>, [{"hx_exutil_bad", "~> 0.1"}], v1))]),
    %% An Erlang package that depends on an Elixir one.
    Pkg(<<"hx_erl_on_ex">>, [release(Repo, Work, <<"hx_erl_on_ex">>, <<"1.0.0">>,
                                     [{<<"hx_exutil">>, <<"~> 0.1">>}], rebar3, erl_files())]),
    {Pid, Url} = bc_gitops_hex_repo:serve(Repo, filename:join(Priv, "httpd")),
    [{httpd, Pid}, {url, Url}, {pem, public_pem(Key)} | Config].

end_per_suite(Config) ->
    ok = inets:stop(httpd, ?config(httpd, Config)),
    Config.

init_per_testcase(_Case, Config) ->
    Dir = bc_gitops_test_util:tmp_dir("ct_hex_mix"),
    [{dir, Dir} | Config].

end_per_testcase(_Case, Config) ->
    ok = bc_gitops_test_apps:stop_all(),
    %% The runtime leaves the dependencies it started running: the next
    %% cases, and suites, start from a node without them.
    _ = [begin
             {ok, Ms} = application:get_key(A, modules),
             _ = application:stop(A),
             ok = application:unload(A),
             _ = [begin code:purge(M), code:delete(M) end || M <- Ms],
             code:del_path(A)
         end || A <- [hx_exutil, hx_dep], lists:keymember(A, 1, application:loaded_applications())],
    bc_gitops_test_util:rm_rf(?config(dir, Config)).

%%====================================================================
%% Cases
%%====================================================================

%% hx_ex and its two dependencies are fetched into deps/ and built by
%% mix, each dependency with its own tool, with bc_gitops's MIX_HOME; the
%% code runs.
elixir_package_builds_offline(Config) ->
    Dest = filename:join(?config(dir, Config), "hex"),
    {ok, #{source_dir := Source, tool := mix, deps := Deps}} =
        bc_gitops_hex:fetch(<<"hx_ex">>, <<"1.0.0">>, Dest, opts(Config)),
    ?assertEqual([{<<"hx_dep">>, <<"0.2.5">>, filename:join([Dest, "deps", "hx_dep"])},
                  {<<"hx_exutil">>, <<"0.1.0">>, filename:join([Dest, "deps", "hx_exutil"])}],
                 Deps),
    [?assertEqual({ok, D}, file:read_link(filename:join([Source, "deps", binary_to_list(N)])))
     || {N, _, D} <- Deps],
    MixHome = filename:join(?config(dir, Config), "mix_home"),
    {Us, {ok, Ebins}} =
        timer:tc(bc_gitops_build, build, [mix, Source, ?BUILD_TIMEOUT, #{mix_home => MixHome}]),
    ct:pal("offline mix build of hx_ex and its 2 dependencies: ~p ms", [Us div 1000]),
    Lib = filename:join([Source, "_build", "prod", "lib"]),
    [?assert(lists:member(filename:join([Lib, A, "ebin"]), Ebins))
     || A <- ["hx_ex", "hx_exutil", "hx_dep"]],
    %% The rebar3 dependency was built by rebar3 (mix's rebar3 manager).
    ?assert(filelib:is_regular(filename:join([Lib, "hx_dep", "ebin", "hx_dep.app"]))),
    ?assert(filelib:is_regular(filename:join([MixHome, "bc_gitops", "ebin",
                                              "bc_gitops_mix_scm.beam"]))),
    ?assertEqual([], filelib:wildcard(filename:join([MixHome, "archives", "*"]))),
    Added = [E || E <- Ebins, not lists:member(E, code:get_path())],
    ok = code:add_pathsa(Added),
    try
        ?assertEqual({hx_exutil, <<"0.2.5">>}, 'Elixir.HxExutil':describe())
    after
        _ = [code:del_path(E) || E <- Added],
        _ = [begin code:purge(M), code:delete(M) end
             || M <- ['Elixir.HxExutil', hx_dep]]
    end.

%% A dependency that is not in deps/ fails the build with mix's own
%% message in the output tail: nothing tries to fetch it.
missing_dependency_is_not_fetched(Config) ->
    Dest = filename:join(?config(dir, Config), "hex"),
    {ok, #{source_dir := Source}} =
        bc_gitops_hex:fetch(<<"hx_ex">>, <<"1.0.0">>, Dest, opts(Config)),
    ok = file:delete(filename:join([Source, "deps", "hx_dep"])),
    {error, {build_failed, mix, {exit_status, Status, Tail}}} =
        bc_gitops_build:build(mix, Source, ?BUILD_TIMEOUT,
                              #{mix_home => filename:join(?config(dir, Config), "mix_home")}),
    ct:pal("exit status ~p, output tail:~n~ts", [Status, Tail]),
    ?assertMatch({match, _}, re:run(Tail, "hx_dep.*\\n.*the dependency is not available")).

%% Deployed from a spec, bumped, upgraded hot to 2.0.0 (same process, its
%% state converted by code_change/3), and removed: no module of it stays.
%% Elixir's modules load on demand all along.
deploy_hot_upgrade_remove(Config) ->
    Gitops = gitops(Config),
    spec(Gitops, "hx_ex", "1.0.0"),
    start(Config, Gitops),
    ok = bc_gitops:reconcile(),
    Counter = 'Elixir.HxEx.Counter',
    Pid = whereis(Counter),
    ?assert(is_pid(Pid)),
    ?assertEqual([1, 2, 3], [Counter:bump() || _ <- lists:seq(1, 3)]),
    ?assertEqual(3, Counter:state()),
    ?assertEqual({v1, {hx_exutil, <<"0.2.5">>}}, Counter:info()),
    ?assertMatch({_, _, "1.0.0"}, lists:keyfind(hx_ex, 1, application:which_applications())),
    Workspace = filename:join([?config(dir, Config), "state", "workspace"]),
    ?assert(filelib:is_regular(filename:join([Workspace, ".mix", "bc_gitops", "ebin",
                                              "bc_gitops_mix_scm.beam"]))),

    Self = self(),
    ok = telemetry:attach(<<"hx_ex">>, [bc_gitops, upgrade, stop],
                          fun(_, _, Meta, _) -> Self ! {upgraded, Meta} end, none),
    spec(Gitops, "hx_ex", "2.0.0"),
    try
        ok = bc_gitops:reconcile()
    after
        telemetry:detach(<<"hx_ex">>)
    end,
    %% Hot, and only the app's changed code was loaded: none of Elixir's.
    receive
        {upgraded, #{app := hx_ex, result := ok, path := hot, modules := Mods,
                     suspended_us := Suspended}} ->
            ct:pal("hot upgrade of hx_ex: modules ~p, suspended ~p us", [Mods, Suspended]),
            ?assert(lists:member(Counter, Mods)),
            ?assertEqual([], [M || M <- Mods, not lists:prefix("Elixir.HxEx.", atom_to_list(M))])
    after 1000 ->
        ct:fail(no_upgrade_event)
    end,
    ?assertEqual(Pid, whereis(Counter)),
    ?assertEqual(#{count => 3, version => 2}, Counter:state()),
    ?assertEqual(4, Counter:bump()),
    ?assertEqual({v2, {hx_exutil, <<"0.2.5">>}}, Counter:info()),
    ?assertMatch({_, _, "2.0.0"}, lists:keyfind(hx_ex, 1, application:which_applications())),
    ?assertMatch({ok, #app_state{status = running, version = <<"2.0.0">>, pid = _}},
                 bc_gitops:get_app_status(hx_ex)),
    %% Elixir's own modules still load on demand after the upgrade.
    ?assertNotEqual({error, bad_name}, code:lib_dir(elixir)),
    ?assertEqual(false, code:is_loaded('Elixir.OptionParser')),
    ?assertEqual([<<"a">>, <<"b">>], 'Elixir.OptionParser':split(<<"a b">>)),

    {ok, Modules} = application:get_key(hx_ex, modules),
    ?assert(lists:member(Counter, Modules)),
    ok = file:del_dir_r(filename:join([Gitops, "apps", "hx_ex"])),
    _ = commit(Gitops, "remove hx_ex"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(false, lists:keyfind(hx_ex, 1, application:which_applications())),
    ?assertEqual([], [M || M <- Modules, code:is_loaded(M) =/= false]),
    ?assertEqual(non_existing, code:which(Counter)),
    ?assertEqual({error, not_found}, bc_gitops:get_app_status(hx_ex)),
    ?assertEqual({error, enoent}, file:read_file_info(filename:join(Workspace, "hx_ex"))),

    %% Elixir still runs, and its modules still load.
    ?assertMatch({_, _, _}, lists:keyfind(elixir, 1, application:which_applications())),
    ?assertEqual(false, code:is_loaded('Elixir.URI')),
    ?assertEqual(<<"a+b">>, 'Elixir.URI':encode_www_form(<<"a b">>)),

    %% Deployed again from scratch.
    spec(Gitops, "hx_ex", "1.0.0"),
    ok = bc_gitops:reconcile(),
    ?assertEqual(1, Counter:bump()),
    ?assertEqual(false, code:is_loaded('Elixir.Version')),
    ?assertMatch({ok, _}, 'Elixir.Version':parse(<<"1.2.3">>)).

tampered_elixir_package(Config) ->
    Dest = filename:join(?config(dir, Config), "hex"),
    ?assertEqual({error, {checksum_mismatch, outer, <<"hx_ex_tampered">>, <<"1.0.0">>}},
                 bc_gitops_hex:fetch(<<"hx_ex_tampered">>, <<"1.0.0">>, Dest, opts(Config))),
    ?assertEqual([], filelib:wildcard(filename:join(Dest, "*"))).

%% Refused by fetch, and by a deploy, which reports it and starts nothing.
tampered_elixir_dependency(Config) ->
    Why = {checksum_mismatch, inner, <<"hx_exutil_bad">>, <<"0.1.0">>},
    ?assertEqual({error, Why},
                 bc_gitops_hex:fetch(<<"hx_ex_baddep">>, <<"1.0.0">>,
                                     filename:join(?config(dir, Config), "hex"), opts(Config))),
    Gitops = gitops(Config),
    spec(Gitops, "hx_ex_baddep", "1.0.0"),
    start(Config, Gitops),
    ?assertMatch({error, {out_of_sync, #{waiting := [{hx_ex_baddep, {backoff, _, _}}]}}},
                 bc_gitops:reconcile()),
    {ok, #{app_errors := #{hx_ex_baddep := #{reason := Reason}}}} = bc_gitops:status(),
    ?assertEqual({fetch_failed, Why}, Reason),
    ?assertEqual(false, lists:keyfind(hx_ex_baddep, 1, application:which_applications())).

%% rebar3 cannot build a mix dependency: the Erlang package is built by
%% rebar3 as a dependency of a mix project written next to it, which has
%% no code of its own.
erlang_package_on_elixir_package(Config) ->
    Dest = filename:join(?config(dir, Config), "hex"),
    Wrapper = filename:join(Dest, "_mix"),
    {ok, #{source_dir := Source, build_dir := Wrapper, tool := mix}} =
        bc_gitops_hex:fetch(<<"hx_erl_on_ex">>, <<"1.0.0">>, Dest, opts(Config)),
    ?assertEqual(filename:join(Dest, "hx_erl_on_ex"), Source),
    ?assertEqual({ok, filename:join([Dest, "deps", "hx_exutil"])},
                 file:read_link(filename:join([Wrapper, "deps", "hx_exutil"]))),
    {ok, Ebins} = bc_gitops_build:build(mix, Wrapper, ?BUILD_TIMEOUT,
                                        #{mix_home => filename:join(?config(dir, Config),
                                                                    "mix_home")}),
    Lib = filename:join([Wrapper, "_build", "prod", "lib"]),
    ?assertEqual([filename:join([Lib, A, "ebin"]) || A <- ["hx_dep", "hx_erl_on_ex", "hx_exutil"]],
                 [E || E <- Ebins, lists:prefix(Lib, E)]),
    Added = [E || E <- Ebins, not lists:member(E, code:get_path())],
    ok = code:add_pathsa(Added),
    try
        ?assertEqual({hx_erl_on_ex, {hx_exutil, <<"0.2.5">>}}, hx_erl_on_ex:hello())
    after
        _ = [code:del_path(E) || E <- Added],
        _ = [begin code:purge(M), code:delete(M) end
             || M <- [hx_erl_on_ex, 'Elixir.HxExutil', hx_dep]]
    end.

%% The spec's build tool must be one the package can be built with.
build_tool_choice(Config) ->
    Dest = fun(N) -> filename:join(?config(dir, Config), N) end,
    ?assertEqual({error, {unsupported, {build_tool, <<"hx_ex">>, rebar3}}},
                 bc_gitops_hex:fetch(<<"hx_ex">>, <<"1.0.0">>, Dest("a"),
                                     (opts(Config))#{build => rebar3})),
    ?assertEqual({error, {unsupported, {build_tool, <<"hx_ex">>, make}}},
                 bc_gitops_hex:fetch(<<"hx_ex">>, <<"1.0.0">>, Dest("b"),
                                     (opts(Config))#{build => make})),
    ?assertMatch({ok, #{tool := mix}},
                 bc_gitops_hex:fetch(<<"hx_ex">>, <<"1.0.0">>, Dest("c"),
                                     (opts(Config))#{build => mix})).

%%====================================================================
%% Packages
%%====================================================================

%% An Erlang package (rebar3) calling the Elixir library hx_exutil.
erl_files() ->
    [{"rebar.config", <<"{erl_opts, [debug_info]}.\n{deps, [{hx_exutil, \"~> 0.1\"}]}.\n">>},
     {"src/hx_erl_on_ex.app.src",
      <<"{application, hx_erl_on_ex, [{description, \"test\"}, {vsn, \"1.0.0\"},\n"
        "  {applications, [kernel, stdlib, hx_exutil]}, {registered, []}, {env, []}]}.\n">>},
     {"src/hx_erl_on_ex.erl",
      <<"-module(hx_erl_on_ex).\n-export([hello/0]).\n"
        "hello() -> {hx_erl_on_ex, 'Elixir.HxExutil':describe()}.\n">>}].

%% An Elixir library calling the Erlang package hx_dep.
util_files(Name) ->
    Mod = camel(Name),
    N = binary_to_list(Name),
    [{"mix.exs",
      iolist_to_binary(
        ["defmodule ", Mod, ".MixProject do\n  use Mix.Project\n"
         "  def project, do: [app: :", N, ", version: \"0.1.0\", elixir: \"~> 1.14\",\n"
         "                   deps: [{:hx_dep, \"~> 0.2\"}]]\n"
         "  def application, do: []\nend\n"])},
     {"lib/" ++ N ++ ".ex",
      iolist_to_binary(["defmodule ", Mod, " do\n"
                        "  def describe, do: {:", N, ", :hx_dep.version()}\nend\n"])}].

ex_files(Version, Code) ->
    ex_files(<<"hx_ex">>, Version, [{"hx_exutil", "~> 0.1"}, {"hx_dep", "~> 0.2"}], Code).

%% An Elixir application: a supervisor and a counter GenServer. v1 keeps
%% an integer; v2 a map, converted both ways by code_change/3.
ex_files(Name, Version, Deps, Code) ->
    N = binary_to_list(Name),
    Mod = camel(Name),
    DepList = string:join(["{:" ++ D ++ ", \"" ++ R ++ "\"}" || {D, R} <- Deps], ", "),
    {Util, _} = hd(Deps),
    [{"mix.exs",
      iolist_to_binary(
        ["defmodule ", Mod, ".MixProject do\n  use Mix.Project\n"
         "  def project, do: [app: :", N, ", version: \"", Version, "\", elixir: \"~> 1.14\",\n"
         "                   deps: [", DepList, "]]\n"
         "  def application, do: [mod: {HxEx.App, []}, extra_applications: [:logger]]\n"
         "end\n"])},
     {"lib/hx_ex/app.ex",
      <<"defmodule HxEx.App do\n  use Application\n"
        "  def start(_type, _args),\n"
        "    do: Supervisor.start_link([HxEx.Counter], strategy: :one_for_one, name: HxEx.Sup)\n"
        "end\n">>},
     {"lib/hx_ex/counter.ex",
      iolist_to_binary(["defmodule HxEx.Counter do\n  use GenServer\n"
                        "  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)\n"
                        "  def bump, do: GenServer.call(__MODULE__, :bump)\n"
                        "  def state, do: GenServer.call(__MODULE__, :state)\n"
                        "  def info, do: {:", atom_to_list(Code), ", ", camel(list_to_binary(Util)),
                        ".describe()}\n"
                        "  @impl true\n  def handle_call(:state, _from, s), do: {:reply, s, s}\n",
                        counter(Code), "end\n"])}].

counter(v1) ->
    "  @impl true\n  def init(nil), do: {:ok, 0}\n"
    "  @impl true\n  def handle_call(:bump, _from, n), do: {:reply, n + 1, n + 1}\n";
counter(v2) ->
    "  @impl true\n  def init(nil), do: {:ok, %{count: 0, version: 2}}\n"
    "  @impl true\n  def handle_call(:bump, _from, %{count: n} = s),\n"
    "    do: {:reply, n + 1, %{s | count: n + 1}}\n"
    "  @impl true\n"
    "  def code_change({:down, _vsn}, %{count: n}, _extra), do: {:ok, n}\n"
    "  def code_change(_vsn, n, _extra) when is_integer(n), do: {:ok, %{count: n, version: 2}}\n".

%% hx_exutil -> HxExutil
camel(Name) ->
    [string:titlecase(P) || P <- string:split(binary_to_list(Name), "_", all)].

%%====================================================================
%% Helpers
%%====================================================================

opts(Config) ->
    bc_gitops_hex_repo:fetch_opts(?config(url, Config), ?config(pem, Config)).

gitops(Config) ->
    Gitops = filename:join(?config(dir, Config), "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    Gitops.

spec(Gitops, App, Version) ->
    write_file(filename:join([Gitops, "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"", Version, "\">>,\n"
                "  source => #{type => hex}}.\n"]),
    _ = commit(Gitops, "spec " ++ App ++ " " ++ Version).

start(Config, Gitops) ->
    {ok, _} = application:ensure_all_started(bc_gitops),
    {ok, _} = bc_gitops:start_reconciler(
                #{repo_url => Gitops, local_path => filename:join(?config(dir, Config), "state"),
                  reconcile_interval => 3600000, build_timeout => ?BUILD_TIMEOUT,
                  hex_repo_url => ?config(url, Config), hex_repo_name => ?REPO,
                  hex_public_key => ?config(pem, Config)}),
    wait_reconciled(?BUILD_TIMEOUT).
