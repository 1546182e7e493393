%%% @doc Builds a fetched OTP project with its own build tool, through
%%% {@link bc_gitops_exec} (no shell, a timeout, the output kept), and
%%% finds the `ebin' directories it produced.
%%%
%%% Detection: `rebar.config' means rebar3, `mix.exs' means mix
%%% (`MIX_ENV=prod'), a `Makefile' means make (erlang.mk projects, or any
%%% Makefile that leaves `ebin/'). A project with both `rebar.config' and
%%% `mix.exs' is built with rebar3 unless the spec's `source.build' says
%%% otherwise.
-module(bc_gitops_build).

-export([detect/2, build/3]).

-type tool() :: rebar3 | mix | make.
-export_type([tool/0]).

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
-spec build(tool(), file:filename(), pos_integer()) ->
    {ok, [file:filename()]} | {error, {build_failed, tool(), bc_gitops_exec:error()}}.
build(Tool, Dir, Timeout) ->
    case run(Tool, Dir, Timeout) of
        ok -> {ok, ebins(Tool, Dir) ++ runtime_ebins(Tool, Timeout)};
        {error, Why} -> {error, {build_failed, Tool, Why}}
    end.

-spec run(tool(), file:filename(), pos_integer()) -> ok | {error, bc_gitops_exec:error()}.
run(rebar3, Dir, Timeout) ->
    exec("rebar3", ["as", "prod", "compile"], Dir, [], Timeout);
run(mix, Dir, Timeout) ->
    Env = [{"MIX_ENV", "prod"}],
    case exec("mix", ["deps.get", "--only", "prod"], Dir, Env, Timeout) of
        ok -> exec("mix", ["compile"], Dir, Env, Timeout);
        Error -> Error
    end;
run(make, Dir, Timeout) ->
    exec("make", [], Dir, [], Timeout).

-spec exec(string(), [string()], file:filename(), [{string(), string()}], pos_integer()) ->
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
%% bc_gitops_code:start/3 does not add them again for a running Elixir.
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
    lists:sort(filelib:wildcard(filename:join([Dir, "_build", "prod", "lib", "*", "ebin"]))).
