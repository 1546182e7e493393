%%% Small OTP apps the tests build from git with make, and the gitops
%%% specs that ask for them: shared by the suites that run real apps
%%% (recovery, HTTP face).
-module(bc_gitops_test_apps).

-export([gitops/1, app_repo/2, app_repo/3, spec/5, plain_app/3, web_app/4, http_get/1, free_port/0]).

-import(bc_gitops_test_util, [commit/2, write_file/2]).

%% A gitops repository Dir/gitops with an empty apps/ (apps/.keep),
%% committed.
gitops(Dir) ->
    Gitops = filename:join(Dir, "gitops"),
    ok = bc_gitops_test_util:init_repo(Gitops),
    write_file(filename:join([Gitops, "apps", ".keep"]), ""),
    _ = commit(Gitops, "empty"),
    Gitops.

%% A git repository Dir/App whose Makefile compiles src/ into ebin/.
app_repo(Dir, App) ->
    app_repo(Dir, App, 0).

%% The same, the build taking at least BuildSeconds (a slow build).
app_repo(Dir, App, BuildSeconds) ->
    Repo = filename:join(Dir, App),
    ok = bc_gitops_test_util:init_repo(Repo),
    write_file(filename:join(Repo, "Makefile"),
               ["all:\n",
                [["\tsleep ", integer_to_list(BuildSeconds), "\n"] || BuildSeconds > 0],
                "\tmkdir -p ebin\n\terlc -o ebin src/*.erl\n"
                "\tcp src/", App, ".app.src ebin/", App, ".app\n"]),
    Repo.

%% Writes and commits Gitops/apps/App/app.config: App at Version from the
%% git repository Repo (branch main); Extra is more of the map's text.
spec(Gitops, App, Version, Repo, Extra) ->
    write_file(filename:join([Gitops, "apps", App, "app.config"]),
               ["#{name => ", App, ", version => <<\"", Version, "\">>,\n",
                "  source => #{type => git, url => <<\"", Repo, "\">>, ref => <<\"main\">>},\n",
                "  ", Extra, "}.\n"]),
    commit(Gitops, "spec " ++ App ++ " " ++ Version).

%% An app whose callback's start/2 is `Start'; rt_die_sup's worker
%% crashes 50 ms after it starts (twice in a row is more than the
%% supervisor's default intensity allows).
plain_app(Repo, App, Start) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    W(App ++ ".app.src", ["{application, ", App, ", [{vsn, \"1.0.0\"}, {mod, {", App, "_app, []}},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(App ++ "_app.erl", ["-module(", App, "_app).\n-behaviour(application).\n"
                          "-export([start/2, stop/1]).\n", Start, "stop(_) -> ok.\n"]),
    W("rt_die_sup.erl", "-module(rt_die_sup).\n-behaviour(supervisor).\n"
                        "-export([start_link/0, init/1]).\n"
                        "start_link() -> supervisor:start_link(?MODULE, []).\n"
                        "init([]) -> {ok, {#{}, [#{id => w, start => {rt_die_w, start_link, []}}]}}.\n"),
    W("rt_die_w.erl", "-module(rt_die_w).\n-behaviour(gen_server).\n"
                      "-export([start_link/0, init/1, handle_call/3, handle_cast/2, handle_info/2]).\n"
                      "start_link() -> gen_server:start_link(?MODULE, [], []).\n"
                      "init([]) -> erlang:send_after(50, self(), die), {ok, s}.\n"
                      "handle_call(_, _, S) -> {reply, ok, S}.\n"
                      "handle_cast(_, S) -> {noreply, S}.\n"
                      "handle_info(die, S) -> {stop, died, S}.\n").

%% A web app App: one gen_server, App_srv, listening on 127.0.0.1:<env
%% port>, answering every request with `Status' and the app's version as
%% the body.
web_app(Repo, App, Vsn, Status) ->
    W = fun(Name, Text) -> write_file(filename:join([Repo, "src", Name]), Text) end,
    Mod = fun(Suffix) -> App ++ Suffix end,
    W(App ++ ".app.src", ["{application, ", App, ", [{vsn, \"", Vsn, "\"}, {mod, {", Mod("_app"),
                          ", []}},\n {modules, [", Mod("_app"), ", ", Mod("_srv"), "]},\n"
                          " {applications, [kernel, stdlib]}, {env, []}]}.\n"]),
    W(Mod("_app.erl"),
      ["-module(", Mod("_app"), ").\n-behaviour(application).\n-behaviour(supervisor).\n"
       "-export([start/2, stop/1, init/1]).\n"
       "start(_, _) -> supervisor:start_link({local, ", Mod("_sup"), "}, ?MODULE, []).\n"
       "stop(_) -> ok.\n"
       "init([]) -> {ok, {#{}, [#{id => srv, start => {", Mod("_srv"), ", start_link, []},\n"
       "                          modules => [", Mod("_srv"), "]}]}}.\n"]),
    W(Mod("_srv.erl"), bc_gitops_test_util:web_server_src(
                         Mod("_srv"), "element(2, application:get_env(" ++ App ++ ", port))",
                         Vsn, Status)).

%% GET http://127.0.0.1:Port/: {Status, Body}.
http_get(Port) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/",
    {ok, {{_, Code, _}, _, Body}} = httpc:request(get, {Url, []}, [{timeout, 3000}],
                                                   [{body_format, binary}]),
    {Code, Body}.

%% A port nothing listens on now.
free_port() ->
    {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(S),
    ok = gen_tcp:close(S),
    Port.
