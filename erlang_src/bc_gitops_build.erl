%%% @doc Builds a fetched OTP project with its own build tool, through
%%% {@link bc_gitops_exec} (no shell, a timeout, the output kept), and
%%% finds the `ebin' directories it produced.
%%%
%%% Detection: `rebar.config' means rebar3, `mix.exs' means mix
%%% (`MIX_ENV=prod'), a `Makefile' means make (erlang.mk projects, or any
%%% Makefile that leaves `ebin/'). A project with both `rebar.config' and
%%% `mix.exs' is built with rebar3 unless the spec's `source.build' says
%%% otherwise.
%%%
%%% A mix project from a hex repository ({@link bc_gitops_hex}, option
%%% `mix_home') is built offline: its hex dependencies are already in
%%% `deps/', verified, and the Hex archive mix would ask for is neither
%%% installed nor fetched. `mix compile' runs (`MIX_ENV=prod',
%%% `HEX_OFFLINE=1') with `MIX_HOME' and `MIX_ARCHIVES' set to bc_gitops's
%%% own directory, so no archive of the user's is loaded, and with
%%% {@link bc_gitops_mix_scm} appended to mix's SCMs: mix then loads the
%%% dependencies from `deps/', checks their versions, and builds them in
%%% dependency order with their own tool (mix, or rebar3 through
%%% `MIX_REBAR3') before the project, all into `_build/prod/lib'. The
%%% `elixir' program runs `Mix.CLI' as the `mix' script does, once that
%%% SCM is registered; the SCM's object code is copied to
%%% `<mix_home>/bc_gitops/ebin' for it.
%%%
%%% Why an SCM: mix 1.14 loads every dependency `mix.exs' declares before
%%% it compiles anything, even with `--no-deps-check', and a dependency given
%%% by a version requirement needs the Hex SCM; without it mix offers to
%%% install Hex (reading stdin) and stops ("Could not find an SCM").
%%% Rewriting the package's `mix.exs' into path dependencies, or putting
%%% prebuilt deps on `ERL_LIBS', would change the package's own build;
%%% the SCM leaves it as published, and mix keeps its checks (versions
%%% against requirements) and its order of builds.
-module(bc_gitops_build).

-export([detect/2, build/3, build/4]).

-type tool() :: rebar3 | mix | make.
-type opts() :: #{mix_home => file:filename()}.
-type error() :: {build_failed, tool(), bc_gitops_exec:error()
                                        | {file_error, atom(), file:filename(), term()}}.
-export_type([tool/0, opts/0, error/0]).

%% Runs Mix as the `mix' script does, with the offline SCM registered.
-define(MIX_OFFLINE,
        "Mix.start(); Mix.SCM.append(:bc_gitops_mix_scm); Mix.CLI.main()").
%% Variables that would move mix away from the project's own layout.
-define(MIX_UNSET, ["MIX_EXS", "MIX_DEPS_PATH", "MIX_BUILD_PATH", "MIX_BUILD_ROOT",
                    "MIX_TARGET", "MIX_PATH"]).

%% @doc The build tool for the project in `Dir'.
-spec detect(file:filename(), tool() | undefined) -> {ok, tool()} | {error, no_build_tool}.
detect(_Dir, Tool) when Tool =/= undefined ->
    {ok, Tool};
detect(Dir, undefined) ->
    Has = fun(F) -> filelib:is_regular(filename:join(Dir, F)) end,
    case {Has("rebar.config"), Has("mix.exs"), Has("Makefile") orelse Has("makefile")} of
        {true, _, _} -> {ok, rebar3};
        {false, true, _} -> {ok, mix};
        {false, false, true} -> {ok, make};
        _ -> {error, no_build_tool}
    end.

%% @doc Builds the project in `Dir' and returns the ebin directories of the
%% app and of its built dependencies. `Timeout' is in milliseconds.
-spec build(tool(), file:filename(), pos_integer()) -> {ok, [file:filename()]} | {error, error()}.
build(Tool, Dir, Timeout) ->
    build(Tool, Dir, Timeout, #{}).

%% @doc As {@link build/3}; with `mix_home', a mix project is built offline
%% from the dependencies in its `deps/' (see the module doc).
-spec build(tool(), file:filename(), pos_integer(), opts()) ->
    {ok, [file:filename()]} | {error, error()}.
build(Tool, Dir, Timeout, Opts) ->
    case run(Tool, Dir, Timeout, Opts) of
        ok -> {ok, ebins(Tool, Dir) ++ runtime_ebins(Tool, Timeout)};
        {error, Why} -> {error, {build_failed, Tool, Why}}
    end.

-spec run(tool(), file:filename(), pos_integer(), opts()) ->
    ok | {error, bc_gitops_exec:error() | {file_error, atom(), file:filename(), term()}}.
run(rebar3, Dir, Timeout, _Opts) ->
    exec("rebar3", ["as", "prod", "compile"], Dir, [], Timeout);
run(mix, Dir, Timeout, #{mix_home := Home0}) ->
    Home = filename:absname(Home0),
    case install_scm(Home) of
        {ok, Ebin} ->
            Rebar3 = case os:find_executable("rebar3") of
                         false -> "rebar3";
                         Path -> Path
                     end,
            Env = [{"MIX_ENV", "prod"}, {"HEX_OFFLINE", "1"}, {"REBAR_OFFLINE", "1"},
                   {"MIX_HOME", Home}, {"MIX_ARCHIVES", filename:join(Home, "archives")},
                   {"MIX_REBAR3", Rebar3}] ++ [{V, false} || V <- ?MIX_UNSET],
            exec("elixir", ["-pa", Ebin, "-e", ?MIX_OFFLINE, "--", "compile"], Dir, Env,
                 Timeout);
        {error, _} = Error ->
            Error
    end;
run(mix, Dir, Timeout, _Opts) ->
    Env = [{"MIX_ENV", "prod"}],
    case exec("mix", ["deps.get", "--only", "prod"], Dir, Env, Timeout) of
        ok -> exec("mix", ["compile"], Dir, Env, Timeout);
        Error -> Error
    end;
run(make, Dir, Timeout, _Opts) ->
    exec("make", [], Dir, [], Timeout).

%% Writes bc_gitops_mix_scm's object code to `<Home>/bc_gitops/ebin' (by
%% rename: builds may run side by side) and returns that directory.
-spec install_scm(file:filename()) ->
    {ok, file:filename()} | {error, {file_error, atom(), file:filename(), term()}}.
install_scm(Home) ->
    Ebin = filename:join([Home, "bc_gitops", "ebin"]),
    Beam = filename:join(Ebin, "bc_gitops_mix_scm.beam"),
    Tmp = Beam ++ "." ++ integer_to_list(erlang:unique_integer([positive])),
    case code:get_object_code(bc_gitops_mix_scm) of
        {bc_gitops_mix_scm, Bin, _} ->
            Result = steps([{mkdir, Ebin, fun() -> filelib:ensure_path(Ebin) end},
                            {write, Tmp, fun() -> file:write_file(Tmp, Bin) end},
                            {rename, Beam, fun() -> file:rename(Tmp, Beam) end}]),
            _ = Result =:= ok orelse file:delete(Tmp),
            case Result of
                ok -> {ok, Ebin};
                {error, _} = Error -> Error
            end;
        error ->
            {error, {file_error, read, "bc_gitops_mix_scm.beam", not_on_code_path}}
    end.

-spec steps([{atom(), file:filename(), fun(() -> ok | {error, term()})}]) ->
    ok | {error, {file_error, atom(), file:filename(), term()}}.
steps([]) ->
    ok;
steps([{Op, File, F} | Rest]) ->
    case F() of
        ok -> steps(Rest);
        {error, Why} -> {error, {file_error, Op, File, Why}}
    end.

-spec exec(string(), [string()], file:filename(), [{string(), string() | false}], pos_integer()) ->
    ok | {error, bc_gitops_exec:error()}.
exec(Program, Args, Dir, Env, Timeout) ->
    case bc_gitops_exec:run(Program, Args, #{cd => Dir, env => Env, timeout => Timeout}) of
        {ok, _Output} -> ok;
        {error, _} = Error -> Error
    end.

%% An Elixir app needs Elixir itself (elixir, logger) on the code path:
%% the installation on the node's code path when it has one, else the one
%% that built the app. Listed whatever ran before, so that a build's ebins
%% do not depend on it (a build is reused after a node restart);
%% bc_gitops_lifecycle:start/3 does not add them again for a running Elixir.
-spec runtime_ebins(tool(), pos_integer()) -> [file:filename()].
runtime_ebins(mix, Timeout) ->
    Lib = case code:lib_dir(elixir) of
              {error, bad_name} ->
                  Args = ["-e", "IO.puts(:code.lib_dir(:elixir))"],
                  case bc_gitops_exec:run("elixir", Args, #{timeout => Timeout}) of
                      {ok, Out} ->
                          %% The last line: anything Elixir warned about comes first.
                          filename:dirname(
                            lists:last([""] ++ string:lexemes(binary_to_list(Out), "\r\n")));
                      {error, _} ->
                          none
                  end;
              Dir ->
                  filename:dirname(Dir)
          end,
    [filename:join([Lib, App, "ebin"]) || Lib =/= none, App <- ["elixir", "logger"]];
runtime_ebins(_, _) ->
    [].

%% rebar3 and mix leave every app, dependencies included, under
%% _build/prod/lib (rebar3: _checkouts ones under _build/prod/checkouts);
%% make leaves ebin/ and deps/*/ebin.
-spec ebins(tool(), file:filename()) -> [file:filename()].
ebins(make, Dir) ->
    [filename:join(Dir, "ebin") | lists:sort(filelib:wildcard(filename:join([Dir, "deps", "*", "ebin"])))];
ebins(rebar3, Dir) ->
    %% Dependencies taken from _checkouts build under checkouts/, not lib/.
    lists:sort(lists:append([filelib:wildcard(filename:join([Dir, "_build", "prod", Kind, "*", "ebin"]))
                             || Kind <- ["lib", "checkouts"]]));
ebins(mix, Dir) ->
    %% Those of apps: a project without code of its own (the one
    %% bc_gitops_hex writes around a rebar3 package) leaves an empty ebin.
    lists:sort([E || E <- filelib:wildcard(filename:join([Dir, "_build", "prod", "lib", "*", "ebin"])),
                     filelib:wildcard(filename:join(E, "*.app")) =/= []]).
