%%% @doc The behaviour a runtime implements: how apps are deployed,
%%% upgraded, reconfigured and removed on this node.
%%%
%%% The reconciler decides what to do and when; the runtime does it. Every
%%% callback runs in a worker process of the reconciler, never inside its
%%% message loop, so a slow deploy never blocks `bc_gitops:status/0'.
%%% Callbacks run one at a time. A callback that raises is treated as
%%% `{error, {crashed, Class, Reason}}' for that app only.
%%%
%%% An `#app_spec{}''s env may hold encrypted values, `{age, Armored}': a
%%% runtime decrypts them at the moment it sets the env, with
%%% {@link bc_gitops_secrets:with_env/3}, and reports in `#app_state{}' the
%%% env as the spec gave it (encrypted), never the plaintext: the state is
%%% shown, stored and planned against.
-module(bc_gitops_runtime).

-include("bc_gitops.hrl").

-export([callbacks/0]).

%% Fetch, build and start an app that is not running.
-callback deploy(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
%% Stop and remove an app.
-callback remove(atom()) -> ok | {error, term()}.
%% Move a running app to the spec's version; the second argument is the
%% version it runs now. A runtime may add a map saying how (e.g.
%% `#{path => hot | restart, modules => [...], suspended_us => N}'): it goes
%% into the `[bc_gitops, upgrade, stop]' event's metadata.
-callback upgrade(#app_spec{}, binary()) ->
    {ok, #app_state{}} | {ok, #app_state{}, map()} | {error, term()}.
%% Apply a changed env to a running app at the same version.
-callback reconfigure(#app_spec{}) -> {ok, #app_state{}} | {error, term()}.
%% Every app this runtime manages, by name.
-callback get_current_state() -> {ok, #{atom() => #app_state{}}}.
%% Optional, and cheap: a term that is the same as long as what
%% `get_current_state/0' returns is the same. The reconciler takes one
%% before each read of the state; when the next reconcile finds the same
%% commit and the same token, it reuses what it read instead of reading and
%% comparing every app again. A token may change without a change of state
%% (that costs one full read), never the other way round: a stopped app or
%% an env changed by hand must give another token. A runtime without it has
%% its state read at every reconcile.
-callback state_token() -> term().

-optional_callbacks([state_token/0]).

%% @doc The callbacks, for checking that a module implements them.
-spec callbacks() -> [{atom(), arity()}].
callbacks() ->
    [{deploy, 1}, {remove, 1}, {upgrade, 2}, {reconfigure, 1}, {get_current_state, 0}].
