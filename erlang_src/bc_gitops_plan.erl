%%% @doc Plans the actions that take the node's current state to the desired
%%% state, in the Rust NIF (a dirty CPU scheduler).
%%%
%%% The plan is deterministic and drops nothing: every desired app is in
%%% sync, has exactly one action, or is listed in `blocked' with the reason.
%%%
%%% Actions, in the order they must run:
%%% <ul>
%%% <li>`{remove, Name}': current apps that are no longer desired (and whose
%%%     spec is not merely broken), dependents before their dependencies;</li>
%%% <li>then in dependency order (an app after everything it depends on,
%%%     ties by name): `{deploy, Spec}' for an app not running;
%%%     `{upgrade, Spec, FromVersion}' when the version differs (downgrades
%%%     too), or from its own version when the app runs where its spec no
%%%     longer says (`isolation' or `vm_config' differ from those the
%%%     runtime reports; a runtime that reports `isolation = undefined' is
%%%     never asked to move an app); `{redeploy, Spec, stopped | failed}' when the version matches
%%%     but the app stopped or failed (drift); `{reconfigure, Spec}' when only
%%%     the env differs (compared with `=:=', but for encrypted values: see
%%%     {@link plan/4}).</li>
%%% </ul>
%%% Blocked reasons: `{cycle, [App]}', `{missing_dependency, App}',
%%% `{invalid_dependency, App}', `{dependency_blocked, App}', and
%%% `invalid_spec' for a running app whose spec is now invalid: it keeps
%%% running at its current version and is never removed for that.
-module(bc_gitops_plan).

-include("bc_gitops.hrl").

-export([plan/3, plan/4]).

-export_type([action/0, block_reason/0, plan/0]).

-type action() ::
    {remove, atom()}
    | {deploy, #app_spec{}}
    | {upgrade, #app_spec{}, FromVersion :: binary()}
    %% The planner gives `stopped' or `failed' (drift); the reconcile adds
    %% `unhealthy' for a first deploy that never became healthy.
    | {redeploy, #app_spec{}, stopped | failed | unhealthy}
    | {reconfigure, #app_spec{}}.

-type block_reason() ::
    {cycle, [atom()]}
    | {missing_dependency, atom()}
    | {invalid_dependency, atom()}
    | {dependency_blocked, atom()}
    | invalid_spec.

-type plan() :: #{actions := [action()], blocked := [{atom(), block_reason()}]}.

%% @doc `Current' is a list or a map of `#app_state{}'; `InvalidApps' names
%% the app directories whose spec failed validation (binaries or atoms).
-spec plan([#app_spec{}], [#app_state{}] | #{atom() => #app_state{}}, [binary() | atom()]) ->
    {ok, plan()}.
plan(Desired, Current, InvalidApps) ->
    plan(Desired, Current, InvalidApps, #{}).

%% @doc {@link plan/3}, where `age_identity' (an age identity file) lets
%% encrypted env values (`{age, Armored}') that differ as ciphertexts be
%% compared by their plaintexts, in the NIF: a value encrypted again is not
%% a change. Without it (or when a value does not decrypt), different
%% ciphertexts are a change.
-spec plan([#app_spec{}], [#app_state{}] | #{atom() => #app_state{}}, [binary() | atom()],
           #{age_identity => binary()}) -> {ok, plan()}.
plan(Desired, Current, InvalidApps, Opts) when is_map(Current) ->
    plan(Desired, maps:values(Current), InvalidApps, Opts);
plan(Desired, Current, InvalidApps, Opts) ->
    Invalid = [name_binary(A) || A <- InvalidApps],
    Identity = maps:get(age_identity, Opts, undefined),
    {ok, Actions, Blocked} = bc_gitops_nif:plan(Desired, Current, Invalid, Identity),
    {ok, #{actions => Actions, blocked => Blocked}}.

-spec name_binary(binary() | atom()) -> binary().
name_binary(Name) when is_atom(Name) -> atom_to_binary(Name, utf8);
name_binary(Name) when is_binary(Name) -> Name.
