%%% @doc Pins: apps that reconciles leave at the version they run, as
%%% Argo CD's "rollback turns auto-sync off", but per app, and ending by
%%% itself when git moves on.
%%%
%%% A pin is made by {@link bc_gitops:rollback/1} (the app went back to
%%% what ran before its last change) or {@link bc_gitops:pin/1} (the app
%%% stays at what it runs now). It remembers the app's spec in git when it
%%% was made (of the last reconciled commit; `undefined' when git had
%%% none), and it lasts until git changes that spec (any field, as a
%%% backoff does: {@link expire/2}) or until {@link bc_gitops:unpin/1}. A
%%% spec made invalid is no change: the pin stays. Meanwhile every action
%%% planned for the app waits with `{pinned, Vsn}' ({@link bc_gitops_hold}),
%%% but one that only starts it again (after a node restart, or drift)
%%% starts the pinned spec ({@link redirect/2}).
%%%
%%% Pins are kept by the reconciler and written to `local_path/pins.bin'
%%% whenever they change, as atomically and checked as `state.bin'
%%% ({@link bc_gitops_store}).
-module(bc_gitops_pins).

-include("bc_gitops.hrl").

-export([load/1, save/2, pin/6, unpin/2, version/2, running/2, expire/2, drop/2, view/1,
         redirect/2]).

-export_type([pins/0, pin/0]).

%% `spec': the app's spec in git when pinned; `running': the spec it is
%% pinned at, if known (to start it again after a restart).
-type pin() :: #{version := binary(), reason := rollback | pin, at := integer(),
                 spec := #app_spec{} | undefined, running := #app_spec{} | undefined}.

-type pins() :: #{atom() => pin()}.

%% @doc The pins kept under `local_path'; none when there is no file or
%% it cannot be trusted.
-spec load(bc_gitops_config:config()) -> pins().
load(Config) ->
    case bc_gitops_store:read(file(Config)) of
        {ok, #{pins := Pins}} when is_map(Pins) -> Pins;
        _ -> #{}
    end.

%% @doc Writes the pins.
-spec save(bc_gitops_config:config(), pins()) -> ok | {error, term()}.
save(Config, Pins) ->
    bc_gitops_store:write(file(Config), #{pins => Pins}).

-spec file(bc_gitops_config:config()) -> file:filename().
file(#{local_path := Base}) -> filename:join(Base, "pins.bin").

%% @doc Pins `App' at `Version' (the spec `Running', if known), for
%% `Reason'; `Spec' is its spec in git now.
-spec pin(atom(), binary(), #app_spec{} | undefined, rollback | pin, #app_spec{} | undefined,
          pins()) -> pins().
pin(App, Version, Running, Reason, Spec, Pins) ->
    Pins#{App => #{version => Version, reason => Reason, spec => Spec, running => Running,
                   at => erlang:system_time(millisecond)}}.

%% @doc The spec `App' is pinned at, if it is and that is known.
-spec running(atom(), pins()) -> #app_spec{} | undefined.
running(App, Pins) ->
    case Pins of
        #{App := #{running := Spec}} -> Spec;
        _ -> undefined
    end.

%% @doc The plan's actions with pins applied: an action that only starts
%% a pinned app again (a deploy after a node restart, a repair of drift)
%% starts it at its pinned spec instead of git's. Other actions of a
%% pinned app are left to wait (see bc_gitops_hold).
-spec redirect([bc_gitops_plan:action()], pins()) -> [bc_gitops_plan:action()].
redirect(Actions, Pins) when map_size(Pins) =:= 0 ->
    Actions;
redirect(Actions, Pins) ->
    [case {A, running(bc_gitops_action:app(A), Pins)} of
         {_, undefined} -> A;
         {{deploy, _}, Spec} -> {deploy, Spec};
         {{redeploy, _, Why}, Spec} -> {redeploy, Spec, Why};
         _ -> A
     end || A <- Actions].

-spec unpin(atom(), pins()) -> {ok, pins()} | {error, {not_pinned, atom()}}.
unpin(App, Pins) ->
    case maps:is_key(App, Pins) of
        true -> {ok, maps:remove(App, Pins)};
        false -> {error, {not_pinned, App}}
    end.

%% @doc The version `App' is pinned at, or `none'.
-spec version(atom(), pins()) -> binary() | none.
version(App, Pins) ->
    case Pins of
        #{App := #{version := V}} -> V;
        _ -> none
    end.

%% @doc The pins that still hold after a parse (`Parsed''s `specs' and
%% `errors'), and those that git ended: the app's valid spec is not the
%% one it had when pinned (or it left git). An app whose spec is invalid
%% now keeps its pin.
-spec expire(pins(), #{specs := [#app_spec{}], errors := [map()], _ => _}) ->
    {pins(), pins()}.
expire(Pins, _Parsed) when map_size(Pins) =:= 0 ->
    {Pins, #{}};
expire(Pins, #{specs := Specs, errors := Errors}) ->
    Invalid = [A || #{app := A} <- Errors],
    maps:fold(
      fun(App, #{spec := Pinned} = Pin, {Keep, Ended}) ->
              Now = case lists:keyfind(App, #app_spec.name, Specs) of
                        false -> undefined;
                        Spec -> Spec
                    end,
              case Now =:= Pinned orelse lists:member(atom_to_binary(App, utf8), Invalid) of
                  true -> {Keep#{App => Pin}, Ended};
                  false -> {Keep, Ended#{App => Pin}}
              end
      end, {#{}, #{}}, Pins).

%% @doc `Pins' without those of `Ended' (each only if it is still the
%% same pin: one made again meanwhile stays).
-spec drop(pins(), pins()) -> pins().
drop(Ended, Pins) ->
    maps:filter(fun(App, Pin) -> maps:get(App, Ended, none) =/= Pin end, Pins).

%% @doc The pins as `status()' shows them: `#{App => #{version, reason,
%% at}}'.
-spec view(pins()) -> #{atom() => #{version := binary(), reason := rollback | pin,
                                    at := integer()}}.
view(Pins) ->
    maps:map(fun(_, Pin) -> maps:with([version, reason, at], Pin) end, Pins).
