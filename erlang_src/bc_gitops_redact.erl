%%% @doc The secrets of a configuration, kept apart so that no response
%%% body, notification or log line of the HTTP face shows one.
%%%
%%% {@link remember/1} stores the secrets of the running configuration
%%% (the listener's token, `webhook_secret', the notify secrets and the
%%% passwords in notify URLs, `git_token', `ssh_passphrase', a password in
%%% `repo_url'); {@link scrub/1} replaces each with `***'. It is the last
%%% step before anything the HTTP face writes leaves the node: the code
%%% never puts a secret there, and this makes sure.
-module(bc_gitops_redact).

-export([remember/1, forget/0, get/1, scrub/1]).

-define(KEY, {?MODULE, secrets}).
%% Shorter strings are not replaced: they would garble every text (the
%% listener's token and webhook_secret are at least 8 bytes anyway).
-define(MIN_BYTES, 4).

%% @doc Remembers the secrets of `Config' for {@link get/1} and
%% {@link scrub/1}.
-spec remember(map()) -> ok.
remember(Config) ->
    Secrets = of_config(Config),
    Scrub = [S || S <- lists:usort(maps:values(Secrets) ++ extra(Config)),
                  byte_size(S) >= ?MIN_BYTES],
    Pattern = case Scrub of
                  [] -> none;
                  _ -> binary:compile_pattern(Scrub)
              end,
    persistent_term:put(?KEY, #{named => Secrets, pattern => Pattern}),
    ok.

%% @doc Forgets them (the HTTP face stopped).
-spec forget() -> ok.
forget() ->
    _ = persistent_term:erase(?KEY),
    ok.

%% @doc One named secret: `token' (the listener's) or `webhook_secret'.
-spec get(token | webhook_secret) -> binary() | undefined.
get(Name) ->
    maps:get(Name, maps:get(named, persistent_term:get(?KEY, #{}), #{}), undefined).

%% @doc `Text' with every remembered secret replaced by `***'.
-spec scrub(iodata()) -> binary().
scrub(Text) ->
    Bin = iolist_to_binary(Text),
    case persistent_term:get(?KEY, #{}) of
        #{pattern := none} -> Bin;
        #{pattern := Pattern} -> binary:replace(Bin, Pattern, <<"***">>, [global]);
        _ -> Bin
    end.

%% The named secrets of a checked configuration.
-spec of_config(map()) -> #{token => binary(), webhook_secret => binary()}.
of_config(Config) ->
    Token = case maps:get(http, Config, false) of
                #{token := T} -> #{token => T};
                _ -> #{}
            end,
    maps:merge(Token, maps:with([webhook_secret], Config)).

%% The secrets that are never used by the HTTP face but must not leak
%% through it either.
-spec extra(map()) -> [binary()].
extra(Config) ->
    Notify = lists:append([[S || #{secret := S} <- [N]] ++ url_password(maps:get(url, N))
                           || N <- maps:get(notify, Config, [])]),
    Git = [V || {K, V} <- maps:to_list(maps:with([git_token, ssh_passphrase], Config)),
                is_binary(V), K =/= undefined],
    Repo = case maps:get(repo_url, Config, undefined) of
               undefined -> [];
               Url -> url_password(Url)
           end,
    Notify ++ Git ++ Repo.

%% The userinfo of a URL, whole and its password part.
-spec url_password(binary()) -> [binary()].
url_password(Url) ->
    case uri_string:parse(Url) of
        #{userinfo := Info} ->
            Bin = unicode:characters_to_binary(Info),
            case binary:split(Bin, <<":">>) of
                [_User, Password] -> [Password, Bin];
                [_] -> [Bin]
            end;
        _ ->
            []
    end.
