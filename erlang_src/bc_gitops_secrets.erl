%%% @doc Encrypted env values: `{age, Armored}' in an `#app_spec{}''s env,
%%% decrypted in the NIF at the moment the env is applied, and kept out of
%%% everything bc_gitops shows or stores.
%%%
%%% A spec's env may give the value of a key as an ASCII-armored age file
%%% (`{age, <<"-----BEGIN AGE ENCRYPTED FILE-----...">>}' in term specs,
%%% `{"$age": "..."}' in JSON). The parse keeps it encrypted (checked to be
%%% well-formed, not decrypted); the specs, the plan, the status, the state
%%% file and telemetry only ever hold the ciphertext. A runtime decrypts
%%% right before it sets the env ({@link with_env/3}, as {@link
%%% bc_gitops_code} does for the default runtime), with the identities of
%%% the `age_identity' file. The plaintext becomes a term when it parses as
%%% exactly one (`file:consult/1' syntax, ending with a dot), else a binary
%%% of its exact bytes.
%%%
%%% A runtime reports the env it was given (with the `{age, _}' values), so
%%% that the plan compares ciphertexts, and, when they differ, plaintexts in
%%% the NIF: a value encrypted again is not a change. The default runtime
%%% still sees a value changed by hand on the node: it keeps a keyed digest
%%% of each value it set ({@link fingerprint/2}, HMAC-SHA-256 under a key
%%% made at random when the node starts) and reports `{age, changed}' when
%%% the live value no longer matches ({@link observed/3}).
%%%
%%% What could still carry a plaintext, an error coming back from the app
%%% (its start or `config_change/3' crashed with the value in its reason),
%%% is scrubbed: every occurrence of a decrypted value in it is replaced by
%%% `'*secret*''. The `format_status/1' of bc_gitops's processes masks
%%% ciphertexts and credentials ({@link format_status/1}).
-module(bc_gitops_secrets).

-include("bc_gitops.hrl").

-export([reveal/2, with_env/3, with_revealed/3, encrypted_keys/1, check/1, fingerprint/2,
         observed/3, scrub/2, mask/1, format_status/1]).

-export_type([error/0]).

-type error() :: {secret, #{app := atom(), key := atom(), kind := atom(),
                            file := binary(), identity := binary() | undefined,
                            message := binary()}}.

-define(DIGEST_KEY, {?MODULE, digest_key}).
-define(MASK, '*secret*').
%% Config keys whose values are credentials.
-define(CREDENTIALS, [git_token, ssh_passphrase, token, git_username, username, webhook_secret,
                      secret]).

%% @doc `Env' with every encrypted value decrypted, with the `age_identity'
%% of the running configuration. An error names the app, the key, the spec
%% file and the identity file, never a value.
-spec reveal(atom(), map()) -> {ok, map()} | {error, error()}.
reveal(App, Env) ->
    case encrypted_keys(Env) of
        [] ->
            {ok, Env};
        [First | _] ->
            Config = config(),
            case maps:get(age_identity, Config, undefined) of
                undefined ->
                    {error, failure(App, First, identity, undefined, Config,
                                    <<"the value is encrypted, but no age_identity is configured">>)};
                Identity ->
                    case bc_gitops_nif:env_reveal(Env, Identity) of
                        {ok, Plain} ->
                            {ok, Plain};
                        {error, {Key, Kind, Message}} ->
                            {error, failure(App, Key, Kind, Identity, Config, Message)}
                    end
            end
    end.

%% @doc Runs `Fun' with the decrypted env, and scrubs every decrypted value
%% out of what it returns or raises. For runtimes: the one place a
%% plaintext lives is the call of `Fun' (and the app's env it sets).
-spec with_env(atom(), map(), fun((map()) -> Result)) -> Result | {error, error()}.
with_env(App, Env, Fun) ->
    case reveal(App, Env) of
        {ok, Env} -> Fun(Env);
        {ok, Plain} -> scrubbed(Fun, Plain, [maps:get(K, Plain) || K <- encrypted_keys(Env)]);
        {error, _} = Error -> Error
    end.

%% @doc Runs `Fun' with `Args' in which every env map (a map with encrypted
%% values, at any depth of lists and tuples) is decrypted, and scrubs what
%% it returns or raises as {@link with_env/3} does. For a call into a node
%% that has no age identity: an `isolation => vm' app's guest.
-spec with_revealed(atom(), [term()], fun(([term()]) -> Result)) -> Result | {error, error()}.
with_revealed(App, Args, Fun) ->
    try reveal_in(App, Args, []) of
        {Args, []} -> Fun(Args);
        {Plain, Secrets} -> scrubbed(Fun, Plain, Secrets)
    catch
        throw:{?MODULE, Error} -> Error
    end.

%% @doc Whether `Armored' is a well-formed armored age file encrypted to
%% recipients, without decrypting it: what spec validation checks, for
%% `bc_gitops validate'.
-spec check(binary()) -> ok | {error, binary()}.
check(Armored) when is_binary(Armored) ->
    bc_gitops_nif:age_check(Armored).

%% @doc Keyed digests of the live values (`Live', as the app has them right
%% after they were set) of the encrypted keys of `Env'.
-spec fingerprint(map(), map()) -> #{atom() => binary()}.
fingerprint(Env, Live) ->
    maps:from_list([{K, digest(V)} || K <- encrypted_keys(Env), #{K := V} <- [Live]]).

%% @doc The env as a runtime reports it: the live value (in `Live') of each
%% key of `Env' (a key unset on the node is left out); an encrypted key is
%% reported as its spec value while its live value is the one set, else as
%% `{age, changed}'.
-spec observed(map(), map(), #{atom() => binary()}) -> map().
observed(Env, Live, Prints) ->
    maps:from_list(
      [{K, case V of
               {age, A} when is_binary(A) ->
                   %% Never the live value: it is the plaintext.
                   case maps:find(K, Prints) =:= {ok, digest(Value)} of
                       true -> V;
                       false -> {age, changed}
                   end;
               _ ->
                   Value
           end}
       || {K, V} <- maps:to_list(Env), #{K := Value} <- [Live]]).

%% @doc `Term' with every occurrence of a value of `Secrets' replaced by
%% `'*secret*'': equal subterms, and text (binaries, strings) holding one.
-spec scrub(T, [term()]) -> T.
scrub(Term, []) ->
    Term;
scrub(Term, Secrets) ->
    Texts = lists:usort([B || S <- Secrets, B <- [text_of(S)], is_binary(B), byte_size(B) >= 3]),
    walk(Term, fun(T) -> scrub_node(T, Secrets, Texts) end).

%% @doc `Term' with every encrypted value (`{age, Armored}') and every
%% credential of a configuration map masked: for what is printed of a
%% process (its state in `sys:get_status/1', crash reports).
-spec mask(T) -> T.
mask(Term) ->
    walk(Term, fun mask_node/1).

%% @doc A `format_status/1' for bc_gitops's gen_servers: masks their state,
%% the message being handled and the crash reason (see {@link mask/1}).
-spec format_status(gen_server:format_status()) -> gen_server:format_status().
format_status(Status) ->
    maps:map(fun(K, V) when K =:= state; K =:= message; K =:= reason; K =:= log -> mask(V);
                (_K, V) -> V
             end, Status).

%%% Internals

-spec scrubbed(fun((A) -> Result), A, [term()]) -> Result.
scrubbed(Fun, Plain, Secrets) ->
    try Fun(Plain) of
        Result -> scrub(Result, Secrets)
    catch
        Class:Reason:Stack ->
            erlang:raise(Class, scrub(Reason, Secrets), scrub(Stack, Secrets))
    end.

%% `Term' with each map that holds encrypted values decrypted, and the
%% decrypted values (added to `Acc'); throws the first error.
-spec reveal_in(atom(), T, [term()]) -> {T, [term()]}.
reveal_in(App, Map, Acc) when is_map(Map) ->
    case encrypted_keys(Map) of
        [] ->
            {Map, Acc};
        Keys ->
            case reveal(App, Map) of
                {ok, Plain} -> {Plain, [maps:get(K, Plain) || K <- Keys] ++ Acc};
                {error, _} = Error -> throw({?MODULE, Error})
            end
    end;
reveal_in(App, [H | T], Acc) ->
    {H1, Acc1} = reveal_in(App, H, Acc),
    {T1, Acc2} = reveal_in(App, T, Acc1),
    {[H1 | T1], Acc2};
reveal_in(App, Tuple, Acc) when is_tuple(Tuple) ->
    {List, Acc1} = reveal_in(App, tuple_to_list(Tuple), Acc),
    {list_to_tuple(List), Acc1};
reveal_in(_App, Other, Acc) ->
    {Other, Acc}.

%% @doc The keys of `Env' whose values are encrypted, in order.
-spec encrypted_keys(map()) -> [atom()].
encrypted_keys(Env) ->
    lists:sort([K || {K, {age, A}} <- maps:to_list(Env), is_binary(A)]).

-spec failure(atom(), atom(), atom(), binary() | undefined, map(), binary()) -> error().
failure(App, Key, Kind, Identity, Config, Message) ->
    {secret, #{app => App, key => Key, kind => Kind, file => spec_file(App, Config),
               identity => Identity, message => Message}}.

%% The spec file of `App' in the checkout, relative to the repository, for
%% errors; its directory when the checkout has none (a cluster member).
-spec spec_file(atom(), map()) -> binary().
spec_file(App, #{apps_dir := AppsDir} = Config) ->
    Dir = filename:join(AppsDir, atom_to_list(App)),
    Found = [F || F <- ["app.config", "app.json", "app.yaml", "app.yml"],
                  filelib:is_regular(filename:join([bc_gitops_config:checkout_dir(Config), Dir, F]))],
    unicode:characters_to_binary(case Found of
                                     [F | _] -> filename:join(Dir, F);
                                     [] -> Dir
                                 end);
spec_file(App, _Config) ->
    atom_to_binary(App, utf8).

-spec config() -> map().
config() ->
    case bc_gitops_reconciler:config() of
        {ok, Config} -> Config;
        {error, _} ->
            case bc_gitops_config:from_env() of
                {ok, Config} -> Config;
                {error, _} -> #{}
            end
    end.

-spec digest(term()) -> binary().
digest(Value) ->
    crypto:mac(hmac, sha256, digest_key(), term_to_binary(Value, [deterministic])).

%% Made once per node; two first callers at the same instant could each
%% make one, which costs at most one needless reconfigure.
-spec digest_key() -> binary().
digest_key() ->
    case persistent_term:get(?DIGEST_KEY, undefined) of
        undefined ->
            Key = crypto:strong_rand_bytes(32),
            persistent_term:put(?DIGEST_KEY, Key),
            Key;
        Key ->
            Key
    end.

-spec text_of(term()) -> binary() | undefined.
text_of(B) when is_binary(B) -> B;
text_of(L) when is_list(L) ->
    case catch unicode:characters_to_binary(L) of
        B when is_binary(B) -> B;
        _ -> undefined
    end;
text_of(_) -> undefined.

-spec scrub_node(term(), [term()], [binary()]) -> {stop, term()} | continue.
scrub_node(T, Secrets, Texts) ->
    case lists:member(T, Secrets) of
        true -> {stop, ?MASK};
        false when is_binary(T), Texts =/= [] ->
            {stop, binary:replace(T, Texts, atom_to_binary(?MASK), [global])};
        false when is_list(T), Texts =/= [] ->
            case text_of(T) of
                B when is_binary(B), B =/= <<>> ->
                    case binary:match(B, Texts) of
                        nomatch -> continue;
                        _ -> {stop, unicode:characters_to_list(
                                      binary:replace(B, Texts, atom_to_binary(?MASK), [global]))}
                    end;
                _ -> continue
            end;
        false -> continue
    end.

-spec mask_node(term()) -> {stop, term()} | continue.
mask_node({age, A}) when is_binary(A) -> {stop, {age, <<"(encrypted)">>}};
mask_node(M) when is_map(M) ->
    {stop, maps:map(fun(K, V) ->
                            case lists:member(K, ?CREDENTIALS) of
                                true -> ?MASK;
                                false -> mask(V)
                            end
                    end, M)};
mask_node(_) -> continue.

%% Rebuilds `Term' bottom up, letting `Node' replace a subterm (and stop
%% there) first.
-spec walk(term(), fun((term()) -> {stop, term()} | continue)) -> term().
walk(Term, Node) ->
    case Node(Term) of
        {stop, New} -> New;
        continue -> descend(Term, Node)
    end.

-spec descend(term(), fun((term()) -> {stop, term()} | continue)) -> term().
descend(T, Node) when is_tuple(T) ->
    list_to_tuple([walk(E, Node) || E <- tuple_to_list(T)]);
descend(T, Node) when is_map(T) ->
    maps:from_list([{walk(K, Node), walk(V, Node)} || {K, V} <- maps:to_list(T)]);
descend([H | T], Node) ->
    [walk(H, Node) | case T of
                         [] -> [];
                         [_ | _] -> descend(T, Node);
                         Tail -> walk(Tail, Node)
                     end];
descend(T, _Node) ->
    T.
