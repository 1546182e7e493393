%%% @doc Outgoing notifications: tells a team's endpoints what changed on
%%% this node.
%%%
%%% The option is `notify => [#{url => Url, secret => Secret, events =>
%%% [Event]}]' (`secret' optional, `events' all by default). Events:
%%% <ul>
%%% <li>`deployed', `upgraded': a reconcile deployed or upgraded an app
%%%     (after its health gate, if any);</li>
%%% <li>`rolled_back': an upgrade was rolled back (its health gate, or its
%%%     own `code_change' failed);</li>
%%% <li>`failed': an action failed;</li>
%%% <li>`degraded', `recovered': an app's health checks went from passing to
%%%     failing (or it was found stopped or failed) and back;</li>
%%% <li>`sync_error': a reconcile could not run (git, the apps directory,
%%%     the runtime).</li>
%%% </ul>
%%% Each is a POST of JSON, `{"event", "app", "version", "from_version",
%%% "to_version", "commit", "node", "reason", "repo", "branch", "at"}',
%%% signed with `X-BC-Gitops-Signature: sha256=<hex HMAC-SHA256 of the
%%% body>' when the entry has a secret.
%%%
%%% Once per change: an app that fails on every retry notifies once, and
%%% again only when its state, its version or the commit changes; a
%%% reconcile error that repeats notifies once until a reconcile runs
%%% through. This process learns of changes from the events bc_gitops
%%% emits ({@link observe/3}, a cast) and from the health monitor
%%% ({@link health/2}); delivery is each endpoint's own process
%%% ({@link bc_gitops_notify_sender}), with retries: nothing here ever runs
%%% in, or waits in, a reconcile.
-module(bc_gitops_notify).

-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, child_specs/1, check_option/1, observe/3, health/2, events/0,
         http_profile/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, format_status/2]).

-export_type([target/0, event/0]).

-type event() :: deployed | upgraded | rolled_back | failed | degraded | recovered | sync_error.
-type target() :: #{url := binary(), secret => binary(), events := [event(), ...]}.

-define(EVENTS, [deployed, upgraded, rolled_back, failed, degraded, recovered, sync_error]).
-define(PROFILE, bc_gitops_notify).

-record(app, {last :: term(), health :: healthy | unhealthy | undefined}).

-record(st, {
    node :: node(),
    repo :: binary() | undefined,
    branch :: binary(),
    clock :: module(),
    senders = [] :: [{pid(), pos_integer(), target()}],
    ca_file :: binary() | undefined,
    apps = #{} :: #{atom() => #app{}},
    commit :: binary() | undefined,
    sync_error :: term()
}).

%% @doc The notifier's child spec when `Config' has notify targets.
-spec child_specs(bc_gitops_config:config()) -> [supervisor:child_spec()].
child_specs(#{notify := [_ | _]}) ->
    [#{id => ?MODULE, start => {?MODULE, start_link, []}, restart => permanent,
       shutdown => 5000, type => worker, modules => [?MODULE]}];
child_specs(_Config) ->
    [].

%% @doc Starts the notifier and one sender per target, as the running
%% reconciler's `notify' option says (read from it: no child spec carries
%% a secret).
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Every event name, in order.
-spec events() -> [event(), ...].
events() -> ?EVENTS.

%% @doc The httpc profile the senders use (one of their own).
-spec http_profile() -> atom().
http_profile() -> ?PROFILE.

%% @doc Checks the `notify' option (for {@link bc_gitops_config}); throws
%% `{bad_config, notify, Why}'. A message never shows a URL or a secret.
-spec check_option(term()) -> [target()].
check_option(undefined) ->
    [];
check_option(Targets) when is_list(Targets) ->
    [target(I, T) || {I, T} <- lists:zip(lists:seq(1, length(Targets)), Targets)];
check_option(_) ->
    throw({bad_config, notify, <<"must be a list of #{url => Url, secret => Secret, events => [Event]}">>}).

-spec target(pos_integer(), term()) -> target().
target(I, #{} = T) ->
    Unknown = maps:keys(T) -- [url, secret, events],
    Unknown =:= [] orelse bad(I, io_lib:format("unknown keys ~p", [Unknown])),
    Url = case catch unicode:characters_to_binary(maps:get(url, T, undefined)) of
              U when is_binary(U) -> U;
              _ -> bad(I, "url must be an http:// or https:// URL")
          end,
    case uri_string:parse(Url) of
        #{scheme := Scheme, host := Host} when (Scheme =:= <<"http">> orelse Scheme =:= <<"https">>),
                                               Host =/= <<>> -> ok;
        _ -> bad(I, "url must be an http:// or https:// URL")
    end,
    Secret = case T of
                 #{secret := S} ->
                     case catch unicode:characters_to_binary(S) of
                         B when is_binary(B), B =/= <<>> -> #{secret => B};
                         _ -> bad(I, "secret must be a non-empty string")
                     end;
                 _ ->
                     #{}
             end,
    Events = case maps:get(events, T, ?EVENTS) of
                 [_ | _] = Es -> lists:usort([event(I, E) || E <- Es]);
                 _ -> bad(I, io_lib:format("events must be a non-empty list of ~p", [?EVENTS]))
             end,
    Secret#{url => Url, events => Events};
target(I, _) ->
    bad(I, "must be a map #{url => Url, secret => Secret, events => [Event]}").

-spec event(pos_integer(), term()) -> event().
event(I, E) ->
    Text = bc_gitops_json:text(E),
    case [Known || Known <- ?EVENTS, atom_to_binary(Known, utf8) =:= Text] of
        [Known] -> Known;
        [] -> bad(I, io_lib:format("unknown event ~ts (one of ~p)", [Text, ?EVENTS]))
    end.

-spec bad(pos_integer(), iodata()) -> no_return().
bad(I, Why) ->
    throw({bad_config, notify, iolist_to_binary(io_lib:format("entry ~b: ~ts", [I, Why]))}).

%% @doc Takes in the events that may be a notification; a cast, so the
%% emitting process (a reconcile's worker) never waits.
-spec observe([atom(), ...], map(), map()) -> ok.
observe([bc_gitops, reconcile, Kind], _Measurements, Meta) when Kind =:= stop; Kind =:= error ->
    tell({reconcile, Kind, maps:with([commit, changes, error], Meta)});
observe([bc_gitops, drift, detected], _Measurements, #{app := App, status := Status}) ->
    tell({health, App, {unhealthy, {drift, Status}}});
observe(_Event, _Measurements, _Meta) ->
    ok.

%% @doc The health monitor's latest result for `App'.
-spec health(atom(), bc_gitops_health:result()) -> ok.
health(App, Result) ->
    tell({health, App, Result}).

-spec tell(term()) -> ok.
tell(Msg) ->
    case whereis(?MODULE) of
        undefined -> ok;
        Pid -> gen_server:cast(Pid, Msg)
    end.

%%% gen_server

%% @private
-spec init([]) -> {ok, #st{}} | {stop, term()}.
init([]) ->
    case bc_gitops_reconciler:config() of
        {ok, Config} -> {ok, start(Config)};
        {error, Why} -> {stop, Why}
    end.

-spec start(bc_gitops_config:config()) -> #st{}.
start(#{notify := Targets, branch := Branch, clock := Clock} = Config) ->
    process_flag(trap_exit, true),
    ok = bc_gitops_redact:remember(Config),
    _ = inets:start(httpc, [{profile, ?PROFILE}]),
    St = #st{node = node(), branch = Branch, clock = Clock,
             repo = case maps:get(repo_url, Config) of
                        undefined -> undefined;
                        Url -> bc_gitops_nif:redact_url(Url)
                    end},
    Indexed = lists:zip(lists:seq(1, length(Targets)), Targets),
    %% HTTPS targets trust ca_file's certificates as downloads do.
    CaFile = maps:get(ca_file, Config, undefined),
    St#st{ca_file = CaFile,
          senders = [start_sender(I, T, Clock, CaFile) || {I, T} <- Indexed]}.

-spec start_sender(pos_integer(), target(), module(), binary() | undefined) ->
          {pid(), pos_integer(), target()}.
start_sender(Index, Target, Clock, CaFile) ->
    {ok, Pid} = bc_gitops_notify_sender:start_link(Index, Target, Clock, CaFile),
    {Pid, Index, Target}.

%% @private
-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(_Request, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast({reconcile, stop, #{commit := Commit, changes := Changes}}, St) ->
    {noreply, lists:foldl(fun change/2, St#st{commit = Commit, sync_error = undefined}, Changes)};
handle_cast({reconcile, error, #{error := Same}}, #st{sync_error = Same} = St) ->
    {noreply, St};
handle_cast({reconcile, error, #{error := Why}}, St) ->
    {noreply, notify(sync_error, undefined, #{reason => Why}, St#st{sync_error = Why})};
handle_cast({health, App, Result}, St) ->
    {noreply, health_changed(App, Result, St)};
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private A sender that died is replaced (what it held is lost, and
%% logged by its crash).
-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info({'EXIT', Pid, _Why}, #st{senders = Senders, clock = Clock, ca_file = CaFile} = St) ->
    case lists:keyfind(Pid, 1, Senders) of
        {Pid, Index, Target} ->
            {noreply, St#st{senders = lists:keyreplace(Pid, 1, Senders,
                                                       start_sender(Index, Target, Clock, CaFile))}};
        false ->
            {noreply, St}
    end;
handle_info(_Other, St) ->
    {noreply, St}.

%% @private
-spec terminate(term(), #st{}) -> ok.
terminate(_Why, _St) ->
    _ = inets:stop(httpc, ?PROFILE),
    ok.

%% @private Crash reports show no URL and no secret.
-spec format_status(normal | terminate, [term()]) -> term().
format_status(_Opt, [_PDict, #st{senders = Senders, apps = Apps, commit = Commit}]) ->
    [{data, [{"State", #{senders => [{Pid, I} || {Pid, I, _} <- Senders], apps => Apps,
                         commit => Commit}}]}];
format_status(_Opt, [_PDict, St]) ->
    [{data, [{"State", St}]}].

%%% What is a notification

%% One app's change in a reconcile.
-spec change(map(), #st{}) -> #st{}.
change(#{app := App, action := remove, result := ok}, #st{apps = Apps} = St) ->
    St#st{apps = maps:remove(App, Apps)};
change(#{action := reconfigure, result := ok}, St) ->
    St;
change(#{app := App, action := redeploy, reason := Drift, result := ok} = C, St)
  when Drift =:= stopped; Drift =:= failed ->
    health_changed(App, healthy, St#st{apps = set_last(App, {running, maps:get(to, C)}, St)});
change(#{app := App, action := Action, to := To, from := From, result := ok}, St) ->
    Event = case Action of
                upgrade -> upgraded;
                _ -> deployed
            end,
    St1 = notify(Event, App, #{version => To, from_version => From, to_version => To}, St),
    St1#st{apps = set(App, #app{last = {Event, To, St#st.commit}, health = healthy}, St1)};
change(#{app := App, action := Action, to := To, from := From, result := {error, Why}}, St) ->
    {Event, Reason} = case Why of
                          {rolled_back, R} -> {rolled_back, R};
                          _ -> {failed, Why}
                      end,
    Key = {Event, To, St#st.commit},
    case maps:get(App, St#st.apps, #app{}) of
        #app{last = Key} ->
            St;
        Known ->
            St1 = notify(Event, App, #{version => To, from_version => From, to_version => To,
                                       reason => Reason, action => Action}, St),
            %% The app was not made healthy by this: no `degraded' for it now.
            St1#st{apps = set(App, Known#app{last = Key, health = unhealthy}, St1)}
    end.

%% A change of an app's health: `degraded' when it was known healthy,
%% `recovered' when it was known unhealthy; the first result only sets it.
-spec health_changed(atom(), bc_gitops_health:result(), #st{}) -> #st{}.
health_changed(App, Result, #st{apps = Apps} = St) ->
    #app{health = Was} = Known = maps:get(App, Apps, #app{}),
    Now = case Result of
              healthy -> healthy;
              {unhealthy, _} -> unhealthy
          end,
    St1 = St#st{apps = Apps#{App => Known#app{health = Now}}},
    case {Was, Result} of
        {healthy, {unhealthy, Why}} -> notify(degraded, App, #{reason => Why}, St1);
        {unhealthy, healthy} -> notify(recovered, App, #{}, St1);
        _ -> St1
    end.

-spec set(atom(), #app{}, #st{}) -> #{atom() => #app{}}.
set(App, Entry, #st{apps = Apps}) ->
    Apps#{App => Entry}.

-spec set_last(atom(), term(), #st{}) -> #{atom() => #app{}}.
set_last(App, Last, #st{apps = Apps}) ->
    Apps#{App => (maps:get(App, Apps, #app{}))#app{last = Last}}.

%% Sends `Event' to every target that wants it.
-spec notify(event(), atom() | undefined, map(), #st{}) -> #st{}.
notify(Event, App, Fields, #st{senders = Senders} = St) ->
    Wanted = [Pid || {Pid, _, #{events := Events}} <- Senders, lists:member(Event, Events)],
    case Wanted of
        [] ->
            St;
        _ ->
            Body = body(Event, App, Fields, St),
            _ = [bc_gitops_notify_sender:send(Pid, Event, Body) || Pid <- Wanted],
            St
    end.

-spec body(event(), atom() | undefined, map(), #st{}) -> binary().
body(Event, App, Fields, #st{node = Node, repo = Repo, branch = Branch, commit = Commit}) ->
    Version = maps:get(version, Fields, undefined),
    Payload = #{event => Event, app => App, node => Node, repo => Repo, branch => Branch,
                commit => Commit, at => erlang:system_time(millisecond),
                version => Version,
                from_version => maps:get(from_version, Fields, undefined),
                to_version => maps:get(to_version, Fields, undefined),
                reason => case maps:get(reason, Fields, undefined) of
                              undefined -> undefined;
                              Why -> bc_gitops_json:text(Why)
                          end},
    bc_gitops_redact:scrub(bc_gitops_json:encode(Payload)).
